"""What a user gets wrong about a host: one line naming the host, exit 1, nothing left on the host."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import processes_under
from tests.ssh.hosts import TestHosts, create_hosts
from tests.ssh.stack import GATEWAY, Stack

# Just enough for a login shell and the preflight script, and no python3.
_TOOLS = ("sh", "bash", "uname", "id", "cat", "dirname", "df", "awk", "sed", "mkdir", "rm", "true")


@pytest.fixture
def stack(ssh_hosts: TestHosts) -> Iterator[Stack]:
    root = ssh_hosts.root / f"bad-{os.urandom(3).hex()}"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "gateway.gpustack.yml").write_text(GATEWAY)
    stack = Stack(root, ssh_hosts)
    yield stack
    # up failed at a host, but the gateway beside it was created: destroy it like a user would.
    stack.cli("destroy", "--yes", check=False, timeout=120)
    assert processes_under(root) == []
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def nopython_hosts() -> Iterator[TestHosts]:
    bindir = Path(tempfile.mkdtemp(prefix="gsiac-nopython-"))
    bindir.chmod(0o755)  # the host's user must reach it (pytest's tmp_path is private to root)
    for tool in _TOOLS:
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    try:
        hosts = create_hosts(1, login_path=str(bindir))
        try:
            yield hosts
        finally:
            hosts.teardown()
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def _fails_cleanly(stack: Stack, hosts: TestHosts, expected: str) -> str:
    result = stack.cli("up", "conf", "--yes", check=False, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert expected in errors[0] and "host " in errors[0], errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    for h in hosts.hosts:
        assert h.installed_files() == [], (h.name, h.installed_files())
        assert [p for p in h.pids() if h.sshd is None or p != h.sshd.pid] == []
    return errors[0]


def test_wrong_key(stack: Stack, ssh_hosts: TestHosts, tmp_path: Path) -> None:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    stack.write(["h1"], identity_file=key)
    _fails_cleanly(stack, ssh_hosts, "authentication refused")


def test_unknown_host_key(stack: Stack, ssh_hosts: TestHosts, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    stack.write(["h1"], known_hosts=empty)
    _fails_cleanly(stack, ssh_hosts, "unknown host key SHA256:")


def test_changed_host_key(stack: Stack, ssh_hosts: TestHosts, tmp_path: Path) -> None:
    other = tmp_path / "hk"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    h = ssh_hosts.hosts[0]
    pub = other.with_suffix(".pub").read_text().split()
    target = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{target} {pub[0]} {pub[1]}\n")
    stack.write(["h1"], known_hosts=wrong)
    _fails_cleanly(stack, ssh_hosts, "host key mismatch")


def test_closed_port(stack: Stack, ssh_hosts: TestHosts) -> None:
    stack.write(["h1"], port=2)  # nothing listens on port 2 of the test host
    _fails_cleanly(stack, ssh_hosts, "unreachable")


def test_missing_python(nopython_hosts: TestHosts) -> None:
    root = nopython_hosts.root / "project"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "gateway.gpustack.yml").write_text(GATEWAY)
    stack = Stack(root, nopython_hosts)
    stack.write(["h1"])
    try:
        _fails_cleanly(stack, nopython_hosts, "no suitable Python")
    finally:
        stack.cli("destroy", "--yes", check=False, timeout=120)
    assert processes_under(root) == []
