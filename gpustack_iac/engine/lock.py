"""The per-stack lock file: one writer at a time, and an owner a human can identify."""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from gpustack_iac.errors import StateError, StateLockedError

UNLOCK_COMMAND = "gpustack-iac state unlock --stack {stack}"
# A lock file can be seen between O_EXCL creation and its owner being written: retry reads this long.
_READ_RETRY_SECONDS = 2.0
# Process start times and lock times come from different clocks' rounding: allow this much slack.
_PID_REUSE_SLACK_SECONDS = 2.0


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    started_at: float  # seconds since the epoch
    operation: str

    @property
    def started_iso(self) -> str:
        return datetime.fromtimestamp(self.started_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.started_iso} (operation: {self.operation})"

    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """Whether the owner still runs; only meaningful for a lock taken on this host."""
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            # A pid reused by a later process does not keep an old lock alive.
            return bool(proc.create_time() <= self.started_at + _PID_REUSE_SLACK_SECONDS)
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            return True


def read_owner(path: Path, retry_s: float = _READ_RETRY_SECONDS) -> LockOwner | None:
    """The owner recorded in a lock file, or None when there is no lock."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read the lock file {path}: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
            return LockOwner(
                pid=int(data["pid"]),
                host=str(data["host"]),
                started_at=float(data["started_at"]),
                operation=str(data.get("operation", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            if time.monotonic() >= deadline:
                raise StateError(
                    f"the lock file {path} is unreadable; if no other gpustack-iac runs, delete it"
                ) from exc
            time.sleep(0.05)


def locked_error(stack: str, owner: LockOwner | None) -> StateLockedError:
    how = UNLOCK_COMMAND.format(stack=stack)
    if owner is None:
        return StateLockedError(f"stack '{stack}' is locked by another process; to clear a stale lock run: {how}")
    stale = owner.is_local() and not owner.is_alive()
    if stale:
        return StateLockedError(
            f"stack '{stack}' is locked by {owner.describe()}, which is no longer running; "
            f"clear the stale lock with: {how}"
        )
    return StateLockedError(
        f"stack '{stack}' is locked by {owner.describe()}; wait for it to finish, "
        f"or if that process is gone run: {how}"
    )


@contextmanager
def hold(path: Path, stack: str, operation: str) -> Iterator[LockOwner]:
    """Create the lock file exclusively for the duration of the block; fail fast if it exists."""
    owner = LockOwner(pid=os.getpid(), host=socket.gethostname(), started_at=time.time(), operation=operation)
    payload = json.dumps(asdict(owner), sort_keys=True).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise locked_error(stack, read_owner(path)) from None
    except OSError as exc:
        raise StateError(f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        _write_owner(fd, payload)
    except OSError as exc:
        # A full disk (ENOSPC) or a quota: an empty lock file left here would block every later
        # command until `state unlock --force`, so it goes, and the reason is one line.
        path.unlink(missing_ok=True)
        raise StateError(f"cannot write the lock file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        yield owner
    finally:
        # Only remove a lock that is still ours (a forced unlock may have handed it to someone else).
        try:
            if path.read_bytes() == payload:
                path.unlink()
        except FileNotFoundError:
            pass


def _write_owner(fd: int, payload: bytes) -> None:
    """The whole owner record, durably; a short write (a disk filling up) is an error, not a torn lock."""
    written = os.write(fd, payload)
    if written != len(payload):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.fsync(fd)


def clear(path: Path, stack: str, force: bool = False) -> LockOwner | None:
    """Remove a stale lock. Refuses while the owner is alive on this host, or is on another host, unless forced."""
    try:
        owner = read_owner(path, retry_s=0.0 if force else _READ_RETRY_SECONDS)
    except StateError:
        if not force:
            raise
        path.unlink(missing_ok=True)
        return None
    if owner is None:
        return None
    if not force:
        refuse_unless_stale(stack, owner)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return owner


def refuse_unless_stale(stack: str, owner: LockOwner) -> None:
    """The rule for clearing a lock without --force: its owner ran on this host and is gone."""
    if not owner.is_local():
        raise StateError(
            f"stack '{stack}' is locked by {owner.describe()}; that host is not this one, so its process "
            "cannot be checked here: make sure it is finished, then unlock with --force"
        )
    if owner.is_alive():
        raise StateLockedError(
            f"stack '{stack}' is locked by {owner.describe()}, which is still running; not unlocking"
        )
