"""A stack on the SSH test hosts, driven through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.conftest import http
from tests.support.cli import run_cli
from tests.ssh.hosts import TestHosts


def fleet_yaml(hosts: TestHosts, names: list[str], identity_file: Path | None = None, known_hosts: Path | None = None,
               port: int | None = None) -> str:
    lines = ["type: fleet", "name: gpus", "ssh_config:", f"  identity_file: {identity_file or hosts.client_key}",
             f"  known_hosts: {known_hosts or hosts.known_hosts}", "  hosts:"]
    for h in hosts.hosts:
        if h.name in names:
            lines += [f"    - hostname: {h.address}", f"      port: {port or h.port}", f"      user: {h.user}"]
    return "\n".join(lines) + "\n"


SERVICE = """type: service
name: hello
port: 8000
auth: true
commands:
  - python3 app.py
probes:
  - url: /health
    timeout: 5
    interval: 1
replica_groups:
  - name: base
    replicas: 2
    resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
  - name: burst
    replicas: 1
    resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
"""

GATEWAY = """type: gateway
name: gw
backend: local
default: true
certificate: null
public_ip: false
"""


class Stack:
    def __init__(self, root: Path, hosts: TestHosts) -> None:
        self.root, self.hosts = root, hosts
        self.config = root / "conf"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GPUSTACK_STATE_DIR"] = str(self.root / ".gpustack" / "state")
        env["GPUSTACK_PASSPHRASE"] = "ssh-e2e-passphrase"
        env.pop("PULUMI_CONFIG_PASSPHRASE", None)
        return env

    def write(self, names: list[str], **overrides: Any) -> None:
        self.config.mkdir(parents=True, exist_ok=True)
        (self.config / "fleet.gpustack.yml").write_text(fleet_yaml(self.hosts, names, **overrides))

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(args, self.root, self.env, check=check, timeout=timeout)

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.cli("output", "--json", "--show-secrets").stdout)

    def status(self) -> dict[str, Any]:
        out = self.outputs()
        _, body = http("GET", out["control_url"] + "/control/services/hello", out["admin_token"])
        return json.loads(body)
