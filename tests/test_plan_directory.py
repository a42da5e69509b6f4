"""`plan`/`up DIR` read the directory given, not its subdirectories (issue 19 item 10): a `prod/` and a
`staging/` under it are other stacks. `--recursive` reads them too; `validate` keeps recursing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICE = "type: service\nname: {name}\nport: 80\ncommands: [python3 -m http.server 80]\n"


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "GPUSTACK_STATE_DIR": str(cwd / ".state")}
    return subprocess.run([sys.executable, "-m", "gpustack_iac", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def _service_names(plan_json: str) -> set[str]:
    steps = json.loads(plan_json)["steps"]
    return {s["name"] for s in steps if s["type"].endswith("ServiceRegistration")}


@pytest.mark.slow  # four CLI runs
def test_plan_reads_only_the_directory_given_unless_recursive(tmp_path: Path) -> None:
    (tmp_path / "prod").mkdir()
    (tmp_path / "staging").mkdir()
    (tmp_path / "gw.gpustack.yml").write_text("type: gateway\nname: gw\nbackend: local\ndefault: true\n---\n"
                                                 "type: fleet\nname: here\nbackends: [local]\nnodes: 1\n")
    (tmp_path / "top.gpustack.yml").write_text(SERVICE.format(name="top"))
    (tmp_path / "prod" / "svc.gpustack.yml").write_text(SERVICE.format(name="svc"))
    (tmp_path / "staging" / "svc.gpustack.yml").write_text(SERVICE.format(name="svc"))  # same name: merging fails

    alone = _cli(tmp_path, "plan", ".", "--format", "json", "--offline")
    assert alone.returncode == 0, alone.stderr
    assert _service_names(alone.stdout) == {"top"}

    merged = _cli(tmp_path, "plan", ".", "--format", "json", "--offline", "--recursive")
    assert merged.returncode == 1 and "svc" in merged.stderr, merged.stderr  # both folders' `svc`: a duplicate

    # A directory with configuration only below it: the message says how to read it.
    nested = tmp_path / "nested"
    (nested / "inner").mkdir(parents=True)
    (nested / "inner" / "top.gpustack.yml").write_text(SERVICE.format(name="inner"))
    hint = _cli(tmp_path, "plan", "nested", "--offline")
    assert hint.returncode == 1 and "pass --recursive" in hint.stderr, hint.stderr

    # validate keeps recursing (it checks a whole tree of files): it finds both folders' `svc`.
    validated = _cli(tmp_path, "validate", ".")
    assert validated.returncode == 1 and "service name 'svc' is already used" in validated.stderr, validated.stderr
