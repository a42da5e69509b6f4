"""The controller's SSH forwards: open, carry HTTP, re-open on the same local port when dropped,
and refuse a host whose key is not the one verified at provisioning."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from gpustack_iac.runtime.tunnels import HostTunnels, JumpSpec, TunnelSpec
from tests.ssh.hosts import TestHost, TestHosts
from tests.support.wait import wait_until

REMOTE_PORT = 18081


def _listening(h: TestHost, port: int) -> bool:
    out = subprocess.run(h.in_host(["ss", "-Hltn", f"sport = :{port}"]), capture_output=True, text=True, timeout=30)
    return bool(out.stdout.strip())


def _serve(hosts: TestHosts, h: TestHost) -> Iterator[TestHost]:
    argv = [sys.executable, "-m", "http.server", str(REMOTE_PORT), "--bind", "127.0.0.1", "--directory", str(hosts.root)]
    proc = subprocess.Popen(h.in_host(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Listening before the test opens a forward to it: on a loaded machine the interpreter's start took
        # longer than the SSH forward's, and the first request through it was reset (the remote end refused).
        wait_until(lambda: _listening(h, REMOTE_PORT), 120, interval=0.2, what=f"the server on {h.name}:{REMOTE_PORT}", proc=proc)
        yield h
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def remote_server(ssh_hosts: TestHosts) -> Iterator[TestHost]:
    yield from _serve(ssh_hosts, ssh_hosts.hosts[0])


@pytest.fixture
def remote_server_h2(ssh_hosts: TestHosts) -> Iterator[TestHost]:
    yield from _serve(ssh_hosts, ssh_hosts.hosts[1])


def _key(path: Path) -> str:
    key = path.read_text().split()
    return f"{key[0]} {key[1]}"


def _spec(hosts: TestHosts, h: TestHost, key_file: Path | None = None, jump: JumpSpec | None = None) -> TunnelSpec:
    return TunnelSpec(name="t", hostname=h.address, port=h.port, user=h.user, identity_file=str(hosts.client_key),
                      host_key=_key(key_file or h.host_pubkey), remote_port=REMOTE_PORT, jump=jump)


async def _open(tunnels: HostTunnels) -> None:
    deadline = time.monotonic() + 20
    while not await tunnels.ensure_agent():
        assert time.monotonic() < deadline, "the forward did not open"
        await asyncio.sleep(0.2)


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


def _ssh_peers(h: TestHost) -> set[str]:
    """The addresses connected to the host's sshd, as seen inside its namespace."""
    assert h.netns
    out = subprocess.run(["ip", "netns", "exec", h.netns, "ss", "-Htn", "state", "established", f"( sport = :{h.port} )"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def test_forward_goes_through_the_jump_host(ssh_hosts: TestHosts, remote_server_h2: TestHost, tmp_path: Path) -> None:
    """proxy_jump: the controller's forward to host 2 runs through host 1, whose key is pinned too."""
    if ssh_hosts.mode != "netns":
        pytest.skip("needs the server inside the host's own namespace")
    h1, h2 = ssh_hosts.hosts[0], remote_server_h2
    jump = JumpSpec(hostname=h1.address, port=h1.port, user=h1.user, identity_file=str(ssh_hosts.client_key),
                    host_key=_key(h1.host_pubkey))

    async def run() -> None:
        tunnels = HostTunnels(_spec(ssh_hosts, h2, jump=jump), tmp_path)
        try:
            await _open(tunnels)
            assert await asyncio.to_thread(_get, tunnels.agent_url() + "/") == 200
            assert _ssh_peers(h2) == {h1.address}  # host 2 sees the jump host, not this machine
        finally:
            await tunnels.close()

    asyncio.run(run())


def test_forward_refuses_another_jump_host_key(ssh_hosts: TestHosts, tmp_path: Path) -> None:
    other = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    h1, h2 = ssh_hosts.hosts[0], ssh_hosts.hosts[1]
    jump = JumpSpec(hostname=h1.address, port=h1.port, user=h1.user, identity_file=str(ssh_hosts.client_key),
                    host_key=_key(other.with_suffix(".pub")))

    async def run() -> bool:
        tunnels = HostTunnels(_spec(ssh_hosts, h2, jump=jump), tmp_path / "t")
        try:
            return await tunnels.ensure_agent()
        finally:
            await tunnels.close()

    assert asyncio.run(run()) is False


def test_forward_targets_the_private_address(ssh_hosts: TestHosts, tmp_path: Path) -> None:
    """An agent on the fleet's network listens on the host's address there, not loopback; a
    controller off that network forwards to that address."""
    if ssh_hosts.mode != "netns":
        pytest.skip("needs the server inside the host's own namespace")
    h = ssh_hosts.hosts[1]
    assert h.netns
    argv = [sys.executable, "-m", "http.server", str(REMOTE_PORT), "--bind", h.address, "--directory", str(ssh_hosts.root)]
    proc = subprocess.Popen(["ip", "netns", "exec", h.netns, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def run() -> None:
        spec = dataclasses.replace(_spec(ssh_hosts, h), remote_host=h.address, network="10.255.255.0/24")
        assert not spec.direct()  # this machine has no address in 10.255.255.0/24
        tunnels = HostTunnels(spec, tmp_path)
        try:
            await _open(tunnels)
            deadline = time.monotonic() + 20
            while True:  # the server in the namespace may still be starting
                try:
                    assert await asyncio.to_thread(_get, tunnels.agent_url() + "/") == 200
                    break
                except OSError:
                    assert time.monotonic() < deadline, "no answer through the forward"
                    await asyncio.sleep(0.2)
        finally:
            await tunnels.close()

    try:
        asyncio.run(run())
    finally:
        proc.kill()
        proc.wait()
