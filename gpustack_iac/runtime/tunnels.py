"""SSH local port forwards to an agent's host, held by the controller and re-opened when they drop.

Agents on SSH fleet hosts bind 127.0.0.1 there; the controller (on the machine running the
gateway) reaches the agent and its replicas through `ssh -N -L` subprocesses, one per remote port.
OpenSSH copies the forwarded bytes in C, outside the gateway's event loop, so proxied traffic costs
the gateway nothing beyond a loopback connection (docs/ssh-fleets.md compares this with asyncssh).

Each forward keeps its local port for its lifetime, so URLs handed out stay valid across a
re-open. The host key is the one verified when the host was provisioned, written to a known_hosts
file of the controller's own under a host key alias; nothing else is trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from gpustack_iac.errors import RuntimeApiError

log = logging.getLogger("gpustack_iac.tunnels")

OPEN_TIMEOUT = 15.0


@dataclass(frozen=True)
class JumpSpec:
    """The jump host (`proxy_jump`) between the controller and a host, with its key as verified at provisioning."""

    hostname: str
    port: int
    user: str | None
    identity_file: str | None
    host_key: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> JumpSpec | None:
        if not data:
            return None
        return cls(hostname=str(data["hostname"]), port=int(data.get("port") or 22), user=data.get("user") or None,
                   identity_file=data.get("identity_file") or None, host_key=str(data.get("host_key_line") or ""))


@dataclass(frozen=True)
class TunnelSpec:
    """How to reach a host: its SSH endpoint, the key to log in with, its verified host key line."""

    name: str
    hostname: str
    port: int
    user: str | None
    identity_file: str | None
    host_key: str  # "ssh-ed25519 AAAA..." as verified at provisioning
    remote_port: int  # the agent's port on the host
    jump: JumpSpec | None = None
    remote_host: str = "127.0.0.1"  # where the agent listens on the host: loopback, or its address in the fleet's network
    network: str | None = None  # the fleet's private network (CIDR), when it has one

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> TunnelSpec:
        return cls(name=name, hostname=str(data["hostname"]), port=int(data.get("port") or 22), user=data.get("user") or None,
                   identity_file=data.get("identity_file") or None, host_key=str(data.get("host_key_line") or ""),
                   remote_port=int(data["remote_port"]), jump=JumpSpec.from_json(data.get("proxy_jump")),
                   remote_host=str(data.get("remote_host") or "127.0.0.1"), network=data.get("network") or None)

    def direct(self) -> bool:
        """True when this machine is on the fleet's private network: the agent and replicas are then
        reached at their own addresses, without forwards."""
        return bool(self.network) and self.remote_host != "127.0.0.1" and on_network(str(self.network))


def on_network(cidr: str) -> bool:
    """Whether one of this machine's interfaces has an address in `cidr`."""
    import psutil  # noqa: PLC0415 - only for fleets with a network

    net = ipaddress.ip_network(cidr, strict=False)
    return any(a.family == socket.AF_INET and ipaddress.ip_address(a.address) in net
               for addrs in psutil.net_if_addrs().values() for a in addrs)


def _verified_options(known_hosts: Path, alias: str) -> list[str]:
    """Options that make ssh trust exactly the key recorded under `alias` and never ask for input."""
    return ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"HostKeyAlias={alias}", "-o", "ConnectTimeout=10",
            "-o", "ControlMaster=no", "-o", "ControlPath=none"]


def _identity(identity_file: str | None) -> list[str]:
    return ["-o", "IdentitiesOnly=yes", "-i", os.path.expanduser(identity_file)] if identity_file else []


def proxy_command(jump: JumpSpec, known_hosts: Path, alias: str) -> str:
    """A ProxyCommand through the jump host. Not `-J`: ssh does not pass its -o options to the jump
    connection, so that hop would be checked against the user's own known_hosts; this one trusts
    only the jump host key verified at provisioning."""
    argv = ["ssh", *_verified_options(known_hosts, alias), "-p", str(jump.port), *_identity(jump.identity_file),
            "-W", "%h:%p", f"{jump.user}@{jump.hostname}" if jump.user else jump.hostname]
    # ssh expands %-tokens in ProxyCommand: only the -W target's may expand.
    return " ".join(a if a == "%h:%p" else shlex.quote(a).replace("%", "%%") for a in argv)


def _die_with_parent() -> None:
    """In the forked child: ask Linux to SIGTERM it when the controller's process dies, however it dies,
    so a killed gateway leaves no ssh behind."""
    try:
        import ctypes  # noqa: PLC0415 - only in the child, only on Linux

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class Forward:
    """One `ssh -N -L 127.0.0.1:<local>:127.0.0.1:<remote>` process."""

    def __init__(self, spec: TunnelSpec, known_hosts: Path, remote_port: int, local_port: int | None = None) -> None:
        self.spec = spec
        self.known_hosts = known_hosts
        self.remote_port = remote_port
        self.local_port = local_port or _free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.opened_at = 0.0

    def argv(self) -> list[str]:
        s = self.spec
        argv = ["ssh", "-N", "-T", *_verified_options(self.known_hosts, f"gpustack-{s.name}"), "-o", "ExitOnForwardFailure=yes",
                "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3", "-p", str(s.port), *_identity(s.identity_file)]
        if s.jump is not None:
            argv += ["-o", f"ProxyCommand={proxy_command(s.jump, self.known_hosts, f'gpustack-{s.name}-jump')}"]
        argv += ["-L", f"127.0.0.1:{self.local_port}:{s.remote_host}:{self.remote_port}"]
        argv.append(f"{s.user}@{s.hostname}" if s.user else s.hostname)
        return argv

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self.opened_at > 0

    async def ensure(self) -> bool:
        """Open the forward when it is not running; True once the local port accepts connections."""
        async with self._lock:
            if self.running and await _port_open(self.local_port):
                return True
            await self.close()
            self.opened_at = 0.0
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent)
            deadline = time.monotonic() + OPEN_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    err = (await self.proc.stderr.read()).decode(errors="replace").strip() if self.proc.stderr else ""
                    log.warning("tunnel to %s:%d failed: %s", self.spec.name, self.remote_port, err.splitlines()[-1:] or "exited")
                    return False
                if await _port_open(self.local_port):
                    self.opened_at = time.monotonic()
                    return True
                await asyncio.sleep(0.05)
            await self.close()
            return False

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        self.opened_at = 0.0
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class HostTunnels:
    """The forwards to one host: the agent's port and each replica port asked for."""

    def __init__(self, spec: TunnelSpec, state_dir: Path) -> None:
        self.spec = spec
        state_dir.mkdir(parents=True, exist_ok=True)
        self.known_hosts = state_dir / f"known_hosts-{spec.name}"
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"gpustack-{spec.name} {spec.host_key}\n")
            if spec.jump is not None:
                f.write(f"gpustack-{spec.name}-jump {spec.jump.host_key}\n")
        self.forwards: dict[int, Forward] = {}
        self._opening: dict[int, asyncio.Task[bool]] = {}

    def forward(self, remote_port: int) -> Forward:
        if remote_port not in self.forwards:
            self.forwards[remote_port] = Forward(self.spec, self.known_hosts, remote_port)
        return self.forwards[remote_port]

    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.forward(self.spec.remote_port).local_port}"

    async def ensure_agent(self) -> bool:
        return await self.forward(self.spec.remote_port).ensure()

    def agent_ready(self) -> bool:
        """True while the agent's forward runs; else it is re-opened in the background (a dead host's
        connect timeout must not hold up the controller's tick) and False is returned."""
        return self._ready_or_open(self.spec.remote_port)

    def _ready_or_open(self, port: int) -> bool:
        fwd = self.forward(port)
        if fwd.running:
            return True
        task = self._opening.get(port)
        if task is None or task.done():
            self._opening[port] = asyncio.ensure_future(fwd.ensure())
        return False

    def map_url(self, url: str | None) -> str | None:
        """The local URL of a replica URL on the host, or None until its forward is open (then opened in the background)."""
        if not url:
            return None
        parsed = urllib.parse.urlsplit(url)
        if parsed.port is None:
            return None
        if self._ready_or_open(parsed.port):
            return f"{parsed.scheme}://127.0.0.1:{self.forward(parsed.port).local_port}{parsed.path}"
        return None

    def prune(self, keep: set[int]) -> None:
        """Close replica forwards no longer needed (the agent's own forward stays)."""
        for port in [p for p in self.forwards if p not in keep and p != self.spec.remote_port]:
            fwd = self.forwards.pop(port)
            asyncio.ensure_future(fwd.close())

    async def close(self) -> None:
        for task in self._opening.values():
            task.cancel()
        for fwd in self.forwards.values():
            await fwd.close()
        self.forwards.clear()
        with contextlib.suppress(OSError):
            self.known_hosts.unlink()


@contextlib.contextmanager
def forwarded(spec: TunnelSpec, state_dir: Path, local_port: int | None = None) -> Iterator[str]:
    """A blocking `ssh -L` to `spec.remote_port` for the length of a with-block, for callers without
    an event loop (the providers and the CLI reaching a gateway on a fleet host): yields
    `http://127.0.0.1:<local>` (`local_port`, else a free one). The same options as the controller's
    forwards (verified key only)."""

    state_dir.mkdir(parents=True, exist_ok=True)
    # Unique per call: providers run in parallel threads of one process.
    known_hosts = state_dir / f"known_hosts-{spec.name}-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"gpustack-{spec.name} {spec.host_key}\n")
        if spec.jump is not None:
            f.write(f"gpustack-{spec.name}-jump {spec.jump.host_key}\n")
    fwd = Forward(spec, known_hosts, spec.remote_port, local_port)
    proc = subprocess.Popen(fwd.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip().splitlines()
                raise RuntimeApiError(f"no SSH tunnel to {spec.hostname}:{spec.port}: {err[-1] if err else 'ssh exited'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", fwd.local_port), timeout=1.0):
                break
            if time.monotonic() > deadline:
                raise RuntimeApiError(f"no SSH tunnel to {spec.hostname}:{spec.port} within {OPEN_TIMEOUT:g} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{fwd.local_port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        with contextlib.suppress(OSError):
            known_hosts.unlink()


@contextlib.contextmanager
def forwarded_agent_url(name: str, url: str, tunnel: dict[str, Any] | None) -> Iterator[str | None]:
    """An agent's URL for a few synchronous calls (providers, `status`): a local agent's own URL; an
    SSH fleet agent's through a forward held for the block (`forwarded`). None when the forward does
    not open (the host is away)."""
    if not tunnel:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="gpustack-forward-") as tmp, contextlib.ExitStack() as stack:
        try:
            local: str | None = stack.enter_context(forwarded(TunnelSpec.from_json(name, tunnel), Path(tmp)))
        except RuntimeApiError:
            local = None
        yield local
