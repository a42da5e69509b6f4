"""End to end: an SSH fleet with its gateway on host 1 (`backend: ssh`, `host:`), through the real CLI.

`up` installs the agents on hosts 1 and 2 and the gateway beside host 1's agent, registers both
agents and a service through an SSH forward to the gateway's control API; `status` reaches it the
same way; traffic goes through a forward to the gateway's data port; `destroy` leaves nothing."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import pytest

from gpustack_iac.runtime.tunnels import TunnelSpec, forwarded
from tests.e2e.conftest import EXAMPLES, http
from tests.ssh.hosts import TestHosts
from tests.ssh.stack import SERVICE, Stack

pytestmark = pytest.mark.slow


def test_gateway_on_a_fleet_host_end_to_end(ssh_hosts: TestHosts, tmp_path: Path) -> None:
    if ssh_hosts.mode != "netns":
        pytest.skip("needs the hosts in their own namespaces")
    h1 = ssh_hosts.hosts[0]
    for h in ssh_hosts.hosts:
        h.mark()
    root = ssh_hosts.root / "project-gw"
    (root / "conf").mkdir(parents=True)
    root.chmod(0o755)
    (root / "conf").chmod(0o755)
    shutil.copy(EXAMPLES / "local" / "app.py", root / "conf" / "app.py")
    (root / "conf" / "gateway.gpustack.yml").write_text(
        f"type: gateway\nname: gw\nbackend: ssh\nhost: {h1.address}\ndefault: true\ncertificate: null\n")
    # The replicas run in the hosts' own directories (the gateway is on a fleet host, so nothing of
    # this machine is assumed to be there): the code travels with `files:`, as on a real host.
    (root / "conf" / "service.gpustack.yml").write_text(SERVICE.replace("commands:", "files:\n  - app.py\ncommands:", 1))
    stack = Stack(root, ssh_hosts)
    stack.write(["h1", "h2"])
    try:
        stack.cli("up", "conf", "--yes", timeout=600)
        out = stack.outputs()
        assert out["control_url"].startswith("http://127.0.0.1:")  # the host's loopback, not this machine's
        status = json.loads(stack.cli("status", "--format", "json").stdout)
        assert {a["name"] for a in status["hosts"] if a.get("healthy")} == {f"gpus-{h.address.replace('.', '-')}"
                                                                           for h in ssh_hosts.hosts[:2]}
        assert all(g["ready"] == g["desired"] for s in status["services"] for g in s["groups"])
        assert "hello: group" in stack.cli("logs", "hello", "--tail", "50").stdout  # through the same forward
        endpoint = urllib.parse.urlsplit(out["endpoint"])
        data = TunnelSpec.from_json("gw-data", {**out["control_tunnel"], "remote_port": endpoint.port})
        with forwarded(data, tmp_path) as url:
            for _ in range(20):
                code, body = http("GET", f"{url}{endpoint.path}/", out["token"])
                assert code == 200, body
    finally:
        stack.cli("destroy", "--yes", check=False, timeout=300)
    for h in ssh_hosts.hosts[:2]:
        assert h.installed_files() == [], (h.name, h.installed_files())
        left = h.wait_only_sshd()
        assert left == [], (h.name, left)
