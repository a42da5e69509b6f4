"""The stack lock, across real processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpustack_iac.engine.lock import LockOwner
from gpustack_iac.engine.state import StateStore
from gpustack_iac.errors import StateError, StateLockedError

PROJECT = "proj"
STACK = "dev"
DEADLINE_S = 60.0

# Holds the lock until a stop file appears (bounded), so the test decides when it ends.
HOLDER = """
import sys, time
from pathlib import Path
from gpustack_iac.engine.state import StateStore
root, stop = Path(sys.argv[1]), Path(sys.argv[2])
store = StateStore(root, "proj", "dev")
with store.lock("up"):
    print("LOCKED", flush=True)
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
print("RELEASED", flush=True)
"""

# Tries once and reports what happened.
CONTENDER = """
import sys
from pathlib import Path
from gpustack_iac.engine.state import StateStore
from gpustack_iac.errors import StateLockedError
store = StateStore(Path(sys.argv[1]), "proj", "dev")
try:
    with store.lock("destroy"):
        print("ACQUIRED", flush=True)
except StateLockedError as exc:
    print("LOCKED-OUT:", exc, flush=True)
    sys.exit(3)
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=DEADLINE_S)
            if proc.stdout:
                proc.stdout.close()


def spawn(procs: list[subprocess.Popen[str]], tmp_path: Path, source: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / f"child{len(procs)}.py"
    script.write_text(source)
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    procs.append(proc)
    return proc


def wait_line(proc: subprocess.Popen[str], expected: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + DEADLINE_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(expected):
            return line
    raise AssertionError(f"child never printed {expected!r}; output: {''.join(seen)!r}")


def test_second_process_fails_fast_naming_the_owner(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    stop = tmp_path / "stop"
    holder = spawn(procs, tmp_path, HOLDER, str(tmp_path), str(stop))
    wait_line(holder, "LOCKED")
    contender = spawn(procs, tmp_path, CONTENDER, str(tmp_path))
    out, _ = contender.communicate(timeout=DEADLINE_S)
    assert contender.returncode == 3, out
    assert f"pid {holder.pid}" in out and socket.gethostname() in out
    assert "UTC" in out and "operation: up" in out
    assert "gpustack-iac state unlock --stack dev" in out
    # In this process too, with the owner available to callers.
    store = StateStore(tmp_path, PROJECT, STACK)
    owner = store.lock_owner()
    assert owner is not None and (owner.pid, owner.operation) == (holder.pid, "up")
    with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
        with store.lock("refresh"):
            pass
    stop.touch()
    wait_line(holder, "RELEASED")
    assert holder.wait(timeout=DEADLINE_S) == 0
    assert not store.lock_path.exists()
    with store.lock("refresh"):
        assert store.lock_owner() == LockOwner(os.getpid(), socket.gethostname(), owner_time(store), "refresh")


def owner_time(store: StateStore) -> float:
    return float(json.loads(store.lock_path.read_text())["started_at"])


def test_unlock_refuses_a_live_owner_and_clears_a_dead_one(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    holder = spawn(procs, tmp_path, HOLDER, str(tmp_path), str(tmp_path / "never"))
    wait_line(holder, "LOCKED")
    store = StateStore(tmp_path, PROJECT, STACK)
    with pytest.raises(StateLockedError, match="still running"):
        store.unlock()
    assert store.lock_path.exists()
    os.kill(holder.pid, signal.SIGKILL)  # dies without releasing the lock
    holder.wait(timeout=DEADLINE_S)
    assert store.lock_path.exists()
    with pytest.raises(StateLockedError, match="no longer running"):
        with store.lock("up"):
            pass
    cleared = store.unlock()
    assert cleared is not None and cleared.pid == holder.pid
    assert store.unlock() is None
    with store.lock("up"):
        assert store.lock_path.exists()


def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    with pytest.raises(RuntimeError):
        with store.lock("up"):
            raise RuntimeError("step failed")
    assert not store.lock_path.exists()
    with store.lock("up"):
        with pytest.raises(StateLockedError):
            with StateStore(tmp_path, PROJECT, STACK).lock("up"):
                pass


def write_owner(store: StateStore, owner: dict[str, object]) -> None:
    store.dir.mkdir(parents=True, exist_ok=True)
    store.lock_path.write_text(json.dumps(owner))


def test_lock_from_another_host_needs_force(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    write_owner(store, {"pid": 1, "host": "some-other-host", "started_at": time.time(), "operation": "up"})
    with pytest.raises(StateError, match="some-other-host.*--force"):
        store.unlock()
    cleared = store.unlock(force=True)
    assert cleared is not None and cleared.host == "some-other-host"
    assert not store.lock_path.exists()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    # Our own pid is alive, but this process started long after the lock was taken.
    write_owner(store, {"pid": os.getpid(), "host": socket.gethostname(), "started_at": 1e9, "operation": "up"})
    cleared = store.unlock()
    assert cleared is not None and cleared.pid == os.getpid()


def test_unreadable_lock_file_is_reported_and_force_clears_it(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    store.dir.mkdir(parents=True)
    store.lock_path.write_text("not json")
    with pytest.raises(StateError, match="unreadable"):
        store.unlock()
    assert store.unlock(force=True) is None
    assert not store.lock_path.exists()


def test_a_full_disk_while_taking_the_lock_is_one_line_and_leaves_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 item 4: ENOSPC writing the owner record printed a traceback and left an empty lock file
    that only `state unlock --force` cleared. The fault is injected into writes to the lock file only."""
    from click.testing import CliRunner

    from gpustack_iac.cli import main

    store = StateStore(tmp_path, PROJECT, STACK)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") == str(store.lock_path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StateError, match=f"cannot write the lock file {store.lock_path}: No space left on device"):
        with store.lock("up"):
            pytest.fail("the block must not run without a lock")
    assert not store.lock_path.exists()
    # Through the CLI: one line on stderr, exit 1, and still no lock file.
    store.dir.mkdir(parents=True, exist_ok=True)
    store.backup_path.write_bytes(b'{"version": 3, "checkpoint": {"latest": {}}}')
    result = CliRunner().invoke(main, ["state", "restore", "--project", PROJECT, "--stack", STACK, "--state-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.strip().splitlines() == [f"error: cannot write the lock file {store.lock_path}: No space left on device"]
    assert not store.lock_path.exists()
