"""SSH connection faults (issue 19 item 8): a host that accepts TCP and closes is one line, no paramiko
traceback; a provider-level `proxy_jump` leaves no session open on the jump host."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpustack_iac.providers.sshconn import SshHostError, SshTarget, SshTrustError, connect
from tests.ssh.hosts import TestHosts


@pytest.fixture
def accepts_and_closes() -> Iterator[int]:
    """A loopback port whose server accepts each connection and closes it at once (no SSH banner)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        server.close()


def test_a_host_that_accepts_tcp_and_closes_is_one_line_without_a_traceback(accepts_and_closes: int) -> None:
    # In a child process: paramiko's transport thread logs through Python's last-resort handler to stderr.
    code = (
        "from gpustack_iac.providers.sshconn import SshHostError, SshTarget, SshTrustError, connect\n"
        f"try:\n    connect(SshTarget(hostname='127.0.0.1', port={accepts_and_closes}, user='nobody', host_key='SHA256:x'))\n"
        "except SshHostError as exc:\n    print('ERROR', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ERROR host nobody@127.0.0.1:{accepts_and_closes}: unreachable"), done.stdout
    assert "Traceback" not in done.stderr and "paramiko" not in done.stderr, done.stderr


def test_a_proxy_jump_session_is_closed_with_its_connection_and_on_failure(ssh_hosts: TestHosts) -> None:
    if ssh_hosts.mode != "netns":
        pytest.skip("needs the hosts in their own namespaces")
    jump, host = ssh_hosts.hosts[0], ssh_hosts.hosts[2]
    assert jump.wait_only_sshd() == [], "sessions of an earlier test still open on the jump host"
    jump.mark()
    target = SshTarget(hostname=host.address, port=host.port, user=host.user, identity_file=str(ssh_hosts.client_key),
                       known_hosts=str(ssh_hosts.known_hosts),
                       proxy_jump={"hostname": jump.address, "port": jump.port, "user": jump.user,
                                   "identity_file": str(ssh_hosts.client_key)})
    conn = connect(target)
    try:
        assert conn.run("echo through-the-jump", hide=True, in_stream=False).stdout.strip() == "through-the-jump"
    finally:
        conn.close()
    # The jump works but the target refuses (nothing listens on that port): the jump session goes too.
    with pytest.raises(SshHostError, match="unreachable"):
        connect(dataclasses.replace(target, port=1))
    left = jump.wait_only_sshd(timeout=60)
    assert left == [], left


def test_refresh_of_a_host_whose_key_changed_fails_rather_than_reading_it_as_down(ssh_hosts: TestHosts, tmp_path: Path) -> None:
    """`up` refreshes each host first; a changed host key was read as "unreachable" (alive: false), so
    `up` exited 0 with the mismatch only in the log. It must fail, naming the mismatch."""
    from gpustack_iac.providers.ssh import HostProvider

    host = ssh_hosts.hosts[0]
    other = tmp_path / "hk"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = other.with_suffix(".pub").read_text().split()
    target = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{target} {pub[0]} {pub[1]}\n")
    props = {"name": "fleet-h1", "hostname": host.address, "port": host.port, "user": host.user,
             "identity_file": str(ssh_hosts.client_key), "known_hosts": str(wrong), "install_dir": "~/.gpustack",
             "install_path": "~/.gpustack", "supervisor": "nohup", "labels": {}}
    with pytest.raises(SshTrustError, match="host key mismatch"):
        HostProvider().read("fleet-h1", props)
    # Down is still down, not an error: the host may come back.
    assert HostProvider().read("fleet-h1", {**props, "known_hosts": str(ssh_hosts.known_hosts), "port": 1}).outs["alive"] is False
