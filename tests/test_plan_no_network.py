"""`plan` of a copied example contacts nobody (issue 19 item 9): the examples' SSH hosts are documentation
addresses (RFC 5737) that plan never probes, and `plan --offline` probes no SSH host at all.

Proved with an audit hook in the process that runs the CLI: any `socket.connect` to an address that
is not loopback (or a Unix socket) is recorded, and the test fails naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())

# Runs `plan` on each directory given, in one process (one interpreter start for all of them),
# and prints a JSON list of [example, exit code, connections to non-loopback addresses].
_RUNNER = textwrap.dedent('''
    import ipaddress, json, socket, sys
    seen = []
    def hook(event, args):
        if event != "socket.connect":
            return
        sock, address = args
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host = address[0]
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        seen.append(f"{host}:{address[1]}")
        raise OSError("test: no network beyond loopback")
    sys.addaudithook(hook)
    from gpustack_iac.cli import main
    results = []
    for example in sys.argv[2:]:
        seen.clear()
        try:
            main(["plan", example, "--state-dir", sys.argv[1] + "/" + example.replace("/", "_"), *EXTRA], standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:
            code = type(exc).__name__ + ": " + str(exc)[:200]
        results.append([example, code, list(seen)])
    print("RESULTS " + json.dumps(results))
''')


def _plans(tmp_path: Path, examples: list[Path], *extra: str) -> list[list[object]]:
    code = f"EXTRA = {list(extra)!r}\n" + _RUNNER
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "AZURE_"))}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), *map(str, examples)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=280)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert line is not None, done.stderr[-3000:]
    return json.loads(line[len("RESULTS "):])  # type: ignore[no-any-return]


@pytest.mark.slow  # a plan of each example, in one process
def test_plan_of_every_example_opens_no_socket_beyond_loopback(tmp_path: Path) -> None:
    results = _plans(tmp_path, EXAMPLES)
    assert len(results) == len(EXAMPLES)
    contacted = {example: seen for example, _code, seen in results if seen}
    assert contacted == {}, contacted


def test_plan_offline_probes_no_ssh_host(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet" / "fleet.gpustack.yml"
    fleet.parent.mkdir()
    # 198.18.0.0/15 (benchmarking, RFC 2544): not a documentation address, so only --offline keeps plan off it.
    fleet.write_text("type: fleet\nname: f\nssh_config:\n  user: u\n  hosts: [198.18.7.7]\n")
    [[_example, code, seen]] = _plans(tmp_path, [fleet.parent], "--offline")
    assert seen == [] and code == 0, (code, seen)
    [[_example, _code, seen]] = _plans(tmp_path, [fleet.parent])
    assert seen == ["198.18.7.7:22"], seen  # without the flag plan does probe it (here refused by the hook)
