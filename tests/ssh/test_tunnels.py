"""The controller's SSH forwards: open, carry HTTP, re-open on the same local port when dropped,
and refuse a host whose key is not the one verified at provisioning."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from gpustack_iac.runtime.tunnels import HostTunnels, TunnelSpec
from tests.ssh.hosts import TestHost, TestHosts

REMOTE_PORT = 18081


@pytest.fixture
def remote_server(ssh_hosts: TestHosts) -> Iterator[TestHost]:
    h = ssh_hosts.hosts[0]
    argv = [sys.executable, "-m", "http.server", str(REMOTE_PORT), "--bind", "127.0.0.1", "--directory", str(ssh_hosts.root)]
    proc = subprocess.Popen(["ip", "netns", "exec", h.netns, *argv] if h.netns else argv,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield h
    finally:
        proc.kill()
        proc.wait()


def _spec(hosts: TestHosts, h: TestHost, key_file: Path | None = None) -> TunnelSpec:
    key = (key_file or h.host_pubkey).read_text().split()
    return TunnelSpec(name="t", hostname=h.address, port=h.port, user=h.user, identity_file=str(hosts.client_key),
                      host_key=f"{key[0]} {key[1]}", remote_port=REMOTE_PORT)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status)


def test_forward_reopens_on_the_same_port(ssh_hosts: TestHosts, remote_server: TestHost, tmp_path: Path) -> None:
    if ssh_hosts.mode != "netns":
        pytest.skip("needs the server inside the host's own namespace")

    async def run() -> None:
        tunnels = HostTunnels(_spec(ssh_hosts, remote_server), tmp_path)
        try:
            deadline = time.monotonic() + 20
            while not await tunnels.ensure_agent():
                assert time.monotonic() < deadline, "the forward did not open"
                await asyncio.sleep(0.2)
            url = tunnels.agent_url()
            assert await asyncio.to_thread(_get, url + "/") == 200
            fwd = tunnels.forward(REMOTE_PORT)
            assert fwd.proc is not None
            fwd.proc.kill()
            await fwd.proc.wait()
            assert not tunnels.agent_ready()  # dropped: re-opened in the background
            deadline = time.monotonic() + 20
            while not tunnels.agent_ready():
                assert time.monotonic() < deadline, "the forward was not re-opened"
                await asyncio.sleep(0.1)
            assert tunnels.agent_url() == url
            assert await asyncio.to_thread(_get, url + "/") == 200
        finally:
            await tunnels.close()

    asyncio.run(run())


def test_forward_refuses_another_host_key(ssh_hosts: TestHosts, tmp_path: Path) -> None:
    other = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)

    async def run() -> bool:
        tunnels = HostTunnels(_spec(ssh_hosts, ssh_hosts.hosts[0], other.with_suffix(".pub")), tmp_path / "t")
        try:
            return await tunnels.ensure_agent()
        finally:
            await tunnels.close()

    assert asyncio.run(run()) is False
