"""The SSH host provider against real sshd hosts: install, facts, supervision, uninstall."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gpustack_iac.providers.ssh import HostProvider
from tests.ssh.hosts import TestHost, TestHosts


def host_props(hosts: TestHosts, h: TestHost, cache: Path, **over: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"name": f"fleet-{h.name}", "hostname": h.address, "port": h.port, "user": h.user,
                             "identity_file": str(hosts.client_key), "known_hosts": str(hosts.known_hosts),
                             "install_dir": "~/.gpustack", "cache_dir": str(cache), "labels": {}}
    props.update(over)
    return props


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheelhouse")


def _wait(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_create_read_delete_leaves_nothing(ssh_hosts: TestHosts, wheel_cache: Path) -> None:
    h = ssh_hosts.hosts[0]
    provider = HostProvider()
    props = host_props(ssh_hosts, h, wheel_cache)
    created = provider.create(props)
    outs = created.outs
    try:
        assert outs["facts"]["cpus"] >= 1 and outs["facts"]["memory_mib"] > 0
        assert outs["supervisor"] == "watchdog"
        token_file = h.home / ".gpustack" / "agent.token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        # The token is on no process's command line.
        for pid in h.pids():
            try:
                assert outs["token"] not in Path(f"/proc/{pid}/cmdline").read_text()
            except FileNotFoundError:
                pass
        assert provider.read(created.id, outs).id == created.id
        # A killed agent is restarted by the watchdog (about a second on an idle machine), on the same port.
        port_file = h.home / ".gpustack" / "run" / "agent.port.json"
        old_pid = json.loads(port_file.read_text())["pid"]
        os.kill(old_pid, signal.SIGKILL)
        assert _wait(lambda: port_file.exists() and json.loads(port_file.read_text())["pid"] != old_pid, 30.0)
        assert json.loads(port_file.read_text())["port"] == outs["agent_port"]
    finally:
        provider.delete(created.id, outs)
    assert h.installed_files() == []
    assert [p for p in h.pids() if p != (h.sshd.pid if h.sshd else 0)] == [] or _wait(
        lambda: all("sshd" in Path(f"/proc/{p}/cmdline").read_text() for p in h.pids() if Path(f"/proc/{p}").exists()), 10)


def test_update_reinstalls_on_package_change_keeping_port_and_token(ssh_hosts: TestHosts, wheel_cache: Path) -> None:
    h = ssh_hosts.hosts[1]
    provider = HostProvider()
    props = host_props(ssh_hosts, h, wheel_cache, package_key="old")
    outs = provider.create(props).outs
    try:
        port_file = h.home / ".gpustack" / "run" / "agent.port.json"
        first_pid = json.loads(port_file.read_text())["pid"]
        assert provider.diff("x", outs, {**props, "package_key": "new"}).changes
        # An install recorded for another package is reinstalled; the agent restarts on the same port.
        (h.home / ".gpustack" / "install.json").write_text(json.dumps({"package": "old", "port": outs["agent_port"]}))
        new = provider.update("x", outs, {**props, "package_key": "new"}).outs
        assert new["agent_port"] == outs["agent_port"] and new["token"] == outs["token"]
        assert json.loads(port_file.read_text())["pid"] != first_pid
        assert provider.read("x", new).id == "x"
        outs = new
    finally:
        provider.delete("x", outs)
    assert h.installed_files() == []


def test_systemd_unit_verifies() -> None:
    import shutil
    import subprocess
    import tempfile

    from gpustack_iac.providers import sshhost

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    pf = sshhost.Preflight(os="Linux", arch="x86_64", home="/root", python="/usr/bin/python3", python_version="3.11",
                           install_dir=tempfile.mkdtemp(prefix="gsiac-unit-"), existed=False, free_mb=10000, writable=True,
                           sudo=False, systemd=True, root=True, gpus=[])
    try:
        for sub in ("venv/bin", "logs"):
            Path(pf.install_dir, sub).mkdir(parents=True)
        Path(pf.install_dir, "venv/bin/python").symlink_to("/usr/bin/python3")
        layout = sshhost.HostLayout.of(pf.install_dir, "gpus-10-0-0-1")
        unit = Path(pf.install_dir) / layout.unit
        unit.write_text(sshhost.systemd_unit(layout, pf, 40001, "root"))
        assert "Restart=always" in unit.read_text()
        done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(pf.install_dir, ignore_errors=True)


def test_proxy_jump_reaches_the_agent_for_installs_and_tunnels(ssh_hosts: TestHosts, wheel_cache: Path, tmp_path: Path) -> None:
    """Host 3 behind host 1: installed through the jump, and the controller's tunnel to its agent
    runs through the same jump, trusting the jump host key verified at install."""
    import asyncio
    import urllib.error
    import urllib.request

    from gpustack_iac.runtime.tunnels import HostTunnels, TunnelSpec

    if ssh_hosts.mode != "netns":
        pytest.skip("needs the hosts in their own namespaces")
    jump, h = ssh_hosts.hosts[0], ssh_hosts.hosts[2]
    provider = HostProvider()
    props = host_props(ssh_hosts, h, wheel_cache, name="fleet-jumped",
                       proxy_jump={"hostname": jump.address, "port": jump.port, "user": jump.user,
                                   "identity_file": str(ssh_hosts.client_key)})
    outs = provider.create(props).outs
    try:
        key = jump.host_pubkey.read_text().split()
        assert outs["tunnel"]["proxy_jump"]["host_key_line"] == f"{key[0]} {key[1]}"

        def status(url: str) -> int:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        async def run() -> int:
            tunnels = HostTunnels(TunnelSpec.from_json("jumped", outs["tunnel"]), tmp_path)
            try:
                deadline = time.monotonic() + 20
                while not await tunnels.ensure_agent():
                    assert time.monotonic() < deadline, "the forward did not open"
                    await asyncio.sleep(0.2)
                return await asyncio.to_thread(status, tunnels.agent_url() + "/v1/replicas")
            finally:
                await tunnels.close()

        assert asyncio.run(run()) == 401  # the agent answers (and wants its token)
    finally:
        provider.delete("fleet-jumped", outs)
    assert h.installed_files() == []


def test_network_lets_hosts_reach_replicas_directly(ssh_hosts: TestHosts, wheel_cache: Path) -> None:
    """`network`: the agent listens on the host's address in the fleet's network, a replica that
    binds $GPUSTACK_HOST is reachable from another host of the network, and a controller on that
    network (this machine, on the hosts' bridge) goes direct, without a forward."""
    import asyncio
    import subprocess
    import sys

    from gpustack_iac.runtime.client import AgentClient
    from gpustack_iac.runtime.tunnels import TunnelSpec

    if ssh_hosts.mode != "netns":
        pytest.skip("needs the hosts in their own namespaces")
    h, other = ssh_hosts.hosts[1], ssh_hosts.hosts[2]
    network = h.address.rsplit(".", 1)[0] + ".0/24"
    provider = HostProvider()
    outs = provider.create(host_props(ssh_hosts, h, wheel_cache, name="fleet-net", network=network)).outs
    try:
        assert outs["url"] == f"http://{h.address}:{outs['agent_port']}"
        spec = TunnelSpec.from_json("net", outs["tunnel"])
        assert spec.remote_host == h.address and spec.direct()

        async def start() -> str:
            client = AgentClient(outs["url"], outs["token"])
            try:
                replica = await client.start({"id": "net-r1", "service": "s", "group": "g", "working_dir": str(h.home),
                                              "commands": ['exec python3 -m http.server "$PORT" --bind "$GPUSTACK_HOST"']})
                return str(replica["url"])
            finally:
                await client.close()

        url = asyncio.run(start())
        assert url.startswith(f"http://{h.address}:")
        fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=3).status)"
        assert other.netns
        assert _wait(lambda: subprocess.run(["ip", "netns", "exec", other.netns, sys.executable, "-c", fetch],
                                            capture_output=True, text=True).stdout.strip() == "200"), \
            "the replica was not reachable from another host of the network"
    finally:
        provider.delete("fleet-net", outs)
    assert h.installed_files() == []
    # No agent, watchdog or replica is left: only sshd (and its closing sessions) in the namespace.
    assert _wait(lambda: all("sshd" in Path(f"/proc/{p}/cmdline").read_text() for p in h.pids() if Path(f"/proc/{p}").exists()), 10)
