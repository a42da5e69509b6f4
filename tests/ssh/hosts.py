"""Test hosts for SSH fleets: real OpenSSH servers, each in its own network namespace.

Each host is a network namespace (`gsiac-<run>-hN`) joined to a bridge in the root namespace by a
veth pair, with an address from 198.18.0.0/15, running its own `/usr/sbin/sshd -D` (generated host
key, an authorized key generated here). The hosts share this machine's filesystem, so each logs in
as its own user (created here, removed at teardown) with its own home directory: what one host
installs under `~/.gpustack` is not seen by another.

Where namespaces cannot be created (no root, no `ip`), three sshd instances listen on
127.0.0.2-127.0.0.4 instead, and the fallback is printed.

Teardown kills, by pid, every process in each namespace and every process of each test user,
then removes the users, namespaces, bridge and files, even when a test failed.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support import netns

SSHD = "/usr/sbin/sshd"


@dataclass
class TestHost:
    __test__ = False
    name: str  # h1, h2, ...
    address: str
    port: int
    user: str
    home: Path
    netns: str | None
    sshd_config: Path
    host_pubkey: Path
    sshd: subprocess.Popen[bytes] | None = None
    # Enter only the network namespace (nsenter --net), not `ip netns exec`'s new mount namespace
    # with its own /sys: runc then finds the cgroup mounts and the host can run containers.
    net_only: bool = False
    # Processes already there when a test began (another test's SSH sessions still closing on a
    # shared host): a test's "nothing left" check is about what its own stack started.
    baseline: set[int] = field(default_factory=set)

    def mark(self) -> None:
        self.baseline = set(self.pids())

    @property
    def host_key_line(self) -> str:
        """The host's known_hosts line."""
        key = self.host_pubkey.read_text().split()
        target = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{target} {key[0]} {key[1]}"

    def pids(self) -> list[int]:
        """Processes that belong to this host: in its namespace, or run by its user."""
        pids: set[int] = set()
        if self.netns:
            pids |= netns.namespace_pids(self.netns)
        for proc in psutil.process_iter(["pid", "username"]):
            if proc.info["username"] == self.user:
                pids.add(proc.pid)
        pids.discard(os.getpid())
        return sorted(pids)

    def kill_all(self) -> None:
        netns.kill_all(self.pids(), timeout=10)
        if self.sshd is not None:
            self.sshd.poll()

    def in_host(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host: in its network namespace when it has one."""
        if not self.netns:
            return argv
        enter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.net_only else ["ip", "netns", "exec", self.netns]
        return [*enter, *argv]

    def start_sshd(self) -> None:
        argv = [SSHD, "-D", "-f", str(self.sshd_config), "-E", str(self.sshd_config.with_suffix(".log"))]
        self.sshd = subprocess.Popen(self.in_host(argv), stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if self.sshd.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"sshd for {self.name} did not start; see {self.sshd_config.with_suffix('.log')}")

    def stop_sshd(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.kill()
            self.sshd.wait(10)

    def wait_only_sshd(self, timeout: float = 20.0) -> list[str]:
        """Poll until no process but sshd itself is left for this host (an SSH session's process
        outlives its client by a moment); the command lines of what is left otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            left = []
            for pid in self.pids():
                if (self.sshd is not None and pid == self.sshd.pid) or pid in self.baseline:
                    continue
                try:
                    left.append(" ".join(psutil.Process(pid).cmdline()) or str(pid))
                except psutil.NoSuchProcess:
                    continue
            if not left or time.monotonic() > deadline:
                return left + _session_clients(self.pids())
            time.sleep(0.2)

    def installed_files(self) -> list[str]:
        """What is left in the host's home besides the test's own .ssh directory."""
        return sorted(str(p.relative_to(self.home)) for p in self.home.iterdir() if p.name != ".ssh")


@dataclass
class TestHosts:
    __test__ = False
    root: Path
    client_key: Path
    known_hosts: Path
    hosts: list[TestHost]
    mode: str  # "netns" or "loopback"
    run_id: str
    bridge: str | None = None
    users: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def teardown(self) -> None:
        for h in self.hosts:
            h.stop_sshd()
            h.kill_all()
        # Processes a test started on this machine for these hosts (a gateway, its tunnels) name the root.
        _kill_under(self.root)
        netns.remove(self.namespaces, self.bridge)
        for user in self.users:
            subprocess.run(["userdel", user], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_under(root: Path) -> None:
    marker = str(root)
    procs = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or []):
                proc.kill()
                procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    psutil.wait_procs(procs, timeout=10)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _can_netns() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"gsiac-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def create_hosts(count: int = 3, force_loopback: bool = False, login_path: str | None = None,
                 engine: bool = False) -> TestHosts:
    """Create `count` hosts; the caller must call `teardown()` (also after a failure here).
    `login_path` replaces the PATH of login sessions (a host "without" some program).
    `engine`: sshd enters only the network namespace (containers can run there) and login sessions
    get DOCKER_HOST=unix://<host's etc>/engine/podman.sock, where `tests/ssh/engine.py` starts one."""
    run_id = f"{os.getpid() % 10000:04d}{random.randint(0, 99):02d}"
    root = Path(tempfile.mkdtemp(prefix=f"gsiac-ssh-{run_id}-"))
    root.chmod(0o755)  # the test users must reach their homes below it
    client_key = root / "client_ed25519"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gsiac-test", "-f", str(client_key))
    # sshd refuses to start without its privilege separation directory (normally made by its init script).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    mode = "loopback" if force_loopback or not _can_netns() else "netns"
    hosts = TestHosts(root=root, client_key=client_key, known_hosts=root / "known_hosts", hosts=[], mode=mode, run_id=run_id)
    try:
        if mode == "netns":
            prefix = netns.free_prefix("198.18")
            hosts.bridge = f"gsbr{run_id}"
            netns.add_bridge(hosts.bridge, prefix)
        else:
            print("\nSSH test hosts: network namespaces unavailable; using sshd on 127.0.0.2-127.0.0.4 instead")
        for i in range(1, count + 1):
            name = f"h{i}"
            user = f"gs{run_id}{name}"
            home = root / name
            home.mkdir()
            _run("useradd", "-M", "-d", str(home), "-s", "/bin/bash", "-p", "*", user)
            hosts.users.append(user)
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700)
            (ssh_dir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
            (ssh_dir / "authorized_keys").chmod(0o600)
            _run("chown", "-R", f"{user}:{user}", str(home))
            home.chmod(0o700)
            etc = root / f"etc-{name}"
            etc.mkdir()
            host_key = etc / "ssh_host_ed25519_key"
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
            ns_name = None
            if mode == "netns":
                ns_name = f"gsiac-{run_id}-{name}"
                address, port = f"{prefix}.{10 + i}", 22
                hosts.namespaces.append(ns_name)
                netns.add_namespace(ns_name, hosts.bridge or "", f"gsv{run_id}{i}", f"gsp{run_id}{i}", address)
            else:
                address = f"127.0.0.{1 + i}"
                port = _free_port(address)
            config = etc / "sshd_config"
            login_env = ([f"PATH={login_path}"] if login_path else []) + ([f"DOCKER_HOST=unix://{etc}/engine/podman.sock"] if engine else [])
            config.write_text(
                f"ListenAddress {address}\nPort {port}\nHostKey {host_key}\nPidFile none\n"
                f"AuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                f"PubkeyAuthentication yes\nUsePAM no\nPermitRootLogin no\nAllowUsers {user}\nStrictModes no\n"
                f"AllowTcpForwarding yes\nX11Forwarding no\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
                f"MaxStartups 100:30:200\nMaxSessions 50\n"
                + (f"SetEnv {' '.join(login_env)}\n" if login_env else "")
            )
            host = TestHost(name=name, address=address, port=port, user=user, home=home, netns=ns_name,
                            sshd_config=config, host_pubkey=host_key.with_suffix(".pub"), net_only=engine)
            hosts.hosts.append(host)
            host.start_sshd()
        hosts.known_hosts.write_text("".join(h.host_key_line + "\n" for h in hosts.hosts))
        return hosts
    except BaseException:
        hosts.teardown()
        raise


def _session_clients(pids: list[int]) -> list[str]:
    """For an SSH session still open on a host: which process on this machine holds its client end
    (so a failing "nothing left" check names the culprit, not just `sshd: user [priv]`)."""
    peers = set()
    for pid in pids:
        try:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.raddr:
                    peers.add(conn.raddr.port)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port in peers and conn.pid:
            try:
                proc = psutil.Process(conn.pid)
                found.append(f"client pid {conn.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())[:300]}")
            except psutil.NoSuchProcess:
                continue
    return found
