"""The "try it" lines `up` prints: a curl command that reaches the endpoint from wherever the
gateway runs, and that never sends an empty token (a failed token lookup stops it)."""

from __future__ import annotations

import shlex
import urllib.parse
from collections.abc import Mapping
from typing import Any

from gpustack_iac.engine.wire import unwrap_secret


def endpoint_hint(outputs: Mapping[str, Any], selector: list[str]) -> list[str]:
    """The lines to print for the stack's first endpoint; `selector` names the stack for `output`
    (`--project P --stack S`, plus `--state URL` off the default), so several stacks never make
    the token lookup ambiguous."""
    endpoint = unwrap_secret(outputs.get("endpoint"))
    if not endpoint:
        return []
    lines = [f"Endpoint: {endpoint}"]
    tunnel = unwrap_secret(outputs.get("control_tunnel"))
    port = urllib.parse.urlsplit(str(endpoint)).port
    if tunnel and port:
        # A gateway on a fleet host binds that host's loopback: the same port forwarded here keeps the URL valid.
        lines += ["The gateway listens on its host's loopback: forward its port first (leave it running):",
                  f"  {ssh_forward(dict(tunnel), port)}"]
    token = shlex.join(["gpustack-iac", "output", "token", "--show-secrets", *selector])
    lines += ["Try it (the token stays out of your shell history):",
              f'  TOKEN=$({token}) && curl -H "Authorization: Bearer ${{TOKEN:?no token}}" {endpoint}/']
    return lines


def ssh_forward(tunnel: dict[str, Any], port: int) -> str:
    """`ssh -N -L port:127.0.0.1:port` to the gateway's host, as the fleet reaches it (user, port, key, jump)."""
    argv = ["ssh", "-N", "-L", f"{port}:127.0.0.1:{port}"]
    if int(tunnel.get("port") or 22) != 22:
        argv += ["-p", str(tunnel["port"])]
    if tunnel.get("identity_file"):
        argv += ["-i", str(tunnel["identity_file"])]
    jump = tunnel.get("proxy_jump")
    if jump:
        argv += ["-J", _target(jump) + (f":{jump['port']}" if int(jump.get("port") or 22) != 22 else "")]
    return shlex.join([*argv, _target(tunnel)])


def _target(spec: Mapping[str, Any]) -> str:
    return f"{spec['user']}@{spec['hostname']}" if spec.get("user") else str(spec["hostname"])
