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
        # A killed agent is restarted by the watchdog within 2 s, on the same port.
        port_file = h.home / ".gpustack" / "run" / "agent.port.json"
        old_pid = json.loads(port_file.read_text())["pid"]
        os.kill(old_pid, signal.SIGKILL)
        assert _wait(lambda: port_file.exists() and json.loads(port_file.read_text())["pid"] != old_pid, 2.0)
        assert json.loads(port_file.read_text())["port"] == outs["agent_port"]
    finally:
        provider.delete(created.id, outs)
    assert h.installed_files() == []
    assert [p for p in h.pids() if p != (h.sshd.pid if h.sshd else 0)] == [] or _wait(
        lambda: all("sshd" in Path(f"/proc/{p}/cmdline").read_text() for p in h.pids() if Path(f"/proc/{p}").exists()), 10)
