"""The curl hint `up` prints: right for each gateway placement, and never sending an empty token."""

from __future__ import annotations

import subprocess

from gpustack_iac.commands.hints import endpoint_hint

SELECTOR = ["--project", "p", "--stack", "dev"]


def _try_line(lines: list[str]) -> str:
    return next(line for line in lines if "curl" in line).strip()


def test_local_and_cloud_gateways_print_curl_to_the_endpoint_naming_the_stack() -> None:
    for endpoint in ("http://127.0.0.1:8080/services/hello", "https://hello.example.com"):
        lines = endpoint_hint({"endpoint": endpoint}, SELECTOR)
        assert lines[0] == f"Endpoint: {endpoint}" and not any("ssh" in line for line in lines)
        line = _try_line(lines)
        assert "gpustack-iac output token --show-secrets --project p --stack dev" in line and line.endswith(f"{endpoint}/")


def test_ssh_gateway_prints_the_forward_that_makes_the_endpoint_reachable() -> None:
    tunnel = {"hostname": "198.18.0.5", "port": 2222, "user": "ops", "identity_file": "/k/id", "remote_port": 9001,
              "proxy_jump": {"hostname": "198.18.0.1", "user": "jump", "port": 22}}
    lines = endpoint_hint({"endpoint": "http://127.0.0.1:8443/services/hello", "control_tunnel": tunnel}, SELECTOR)
    forward = next(line for line in lines if line.strip().startswith("ssh ")).strip()
    # The gateway's own port (not the control API's), the fleet's login, key and jump host.
    assert forward == "ssh -N -L 8443:127.0.0.1:8443 -p 2222 -i /k/id -J jump@198.18.0.1 ops@198.18.0.5"
    assert _try_line(lines).endswith("http://127.0.0.1:8443/services/hello/")


def _run(line: str, lookup: str) -> subprocess.CompletedProcess[str]:
    # `gpustack-iac` and `curl` as shell functions: what the printed line sends, without a network.
    script = f"gpustack-iac() {{ {lookup}; }}\ncurl() {{ echo \"SENT $*\"; }}\n{line}\n"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


def test_the_printed_line_never_sends_an_empty_token() -> None:
    line = _try_line(endpoint_hint({"endpoint": "http://127.0.0.1:8080/services/hello"}, SELECTOR))
    assert "SENT -H Authorization: Bearer tok" in _run(line, "echo tok").stdout
    for lookup in ("echo 'several stacks' >&2; return 1", "true"):  # a failed lookup, an empty answer
        done = _run(line, lookup)
        assert done.returncode != 0 and "SENT" not in done.stdout, (lookup, done.stdout)
