"""A gateway on a fleet host (providers/sshgateway.py) against the real sshd test hosts.

Host 1 runs the gateway beside its agent, bound to its loopback; this machine reaches the control
API and the data plane only through SSH forwards. The gateway reaches host 1's agent on loopback
and host 2's agent through a tunnel it holds itself, with the fleet key uploaded 0600."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gpustack_iac.providers.ssh import HostProvider
from gpustack_iac.providers.sshgateway import GatewayHostProvider
from gpustack_iac.runtime import sync_client as http
from gpustack_iac.runtime.tunnels import TunnelSpec, forwarded
from tests.ssh.hosts import TestHosts
from tests.ssh.test_provider import host_props

APP = Path(__file__).parents[1] / "runtime" / "apps" / "echo.py"


def _wait(predicate, timeout: float = 60.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def _only_sshd(pids: list[int]) -> bool:
    return all("sshd" in Path(f"/proc/{p}/cmdline").read_text() for p in pids if Path(f"/proc/{p}").exists())


@pytest.mark.slow
def test_gateway_on_a_fleet_host(ssh_hosts: TestHosts, tmp_path_factory: pytest.TempPathFactory) -> None:
    if ssh_hosts.mode != "netns":
        pytest.skip("needs the hosts in their own namespaces")
    h1, h2 = ssh_hosts.hosts[0], ssh_hosts.hosts[1]
    cache = tmp_path_factory.mktemp("wheelhouse-gw")
    app = ssh_hosts.root / "gwapp" / "echo.py"  # readable by the hosts' users
    app.parent.mkdir(exist_ok=True)
    shutil.copy(APP, app)
    app.parent.chmod(0o755)
    app.chmod(0o644)
    hosts = HostProvider()
    gateways = GatewayHostProvider()
    made: list[tuple[Any, str, dict[str, Any]]] = []
    try:
        agents = {}
        for h in (h1, h2):
            outs = hosts.create(host_props(ssh_hosts, h, cache, name=f"gpus-{h.name}")).outs
            made.append((hosts, f"gpus-{h.name}", outs))
            agents[h.name] = outs
        gw = gateways.create({**host_props(ssh_hosts, h1, cache, name="gw"), "keys": {"identity": str(ssh_hosts.client_key)}}).outs
        made.append((gateways, "gw", gw))
        key_file = Path(gw["key_paths"]["identity"])
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        for name in ("service.token", "admin.token"):
            assert oct((Path(gw["install_path"]) / name).stat().st_mode & 0o777) == "0o600"
        # The gateway binds the host's loopback: not reachable from here but through SSH.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{h1.address}:{gw['data_port']}/", timeout=2)
        control = TunnelSpec.from_json("gw", gw["tunnel"])
        with forwarded(control, tmp_path_factory.mktemp("fwd")) as control_url:
            admin = gw["admin_token"]
            # Host 1's own agent on loopback; host 2's through the gateway's tunnel with the uploaded key.
            http.call("PUT", control_url, "/control/agents/h1", admin, {"url": agents["h1"]["url"], "token": agents["h1"]["token"],
                                                                       "labels": {}})
            http.call("PUT", control_url, "/control/agents/h2", admin,
                      {"url": agents["h2"]["url"], "token": agents["h2"]["token"], "labels": {},
                       "tunnel": {**agents["h2"]["tunnel"], "identity_file": str(key_file)}})
            group = {"name": "g", "generation": "1", "replicas": {"min": 2, "max": 2}, "commands": [f"exec python3 {app}"],
                     "env": {}, "resources": {"cpu": {"min": 1}, "memory_bytes": {"min": 0}, "disk_bytes": {"min": 0}, "gpu": None}}
            http.call("PUT", control_url, "/control/services/echo", admin,
                      {"name": "echo", "generation": "s1", "auth": True, "groups": [group],
                       "probe": {"url": "/health", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.3}})

            def healthy() -> bool:
                listed = http.call("GET", control_url, "/control/agents", admin)
                return {a["name"] for a in listed if a.get("healthy")} == {"h1", "h2"}

            _wait(healthy)
            _wait(lambda: all(g["ready"] == 2 for g in http.call("GET", control_url, "/control/services/echo", admin)["groups"]), 90)
        data = TunnelSpec.from_json("gw-data", {**gw["tunnel"], "remote_port": gw["data_port"]})
        with forwarded(data, tmp_path_factory.mktemp("fwd-data")) as url:
            seen = set()
            for _ in range(20):
                req = urllib.request.Request(f"{url}/services/echo/hello", headers={"Authorization": f"Bearer {gw['token']}"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    assert r.status == 200
                    seen.add(json.loads(r.read())["replica"])
            assert len(seen) == 2
    finally:
        for provider, id_, outs in reversed(made):
            provider.delete(id_, outs)
    for h in (h1, h2):
        assert h.installed_files() == [], (h.name, h.installed_files())
        assert _wait(lambda h=h: _only_sshd(h.pids()), 15)
