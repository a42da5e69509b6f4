"""Process helpers: start a detached daemon and wait for its port file, check and stop processes by pid.

A pid alone is not an identity (pids are reused), so every check pairs it with the process's
create_time as psutil reports it; callers store both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import psutil

from gpustack_iac.errors import RuntimeApiError

_POLL = 0.05


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    create_time: float
    ports: dict[str, Any]  # the port file's JSON: {"port": ..., "control_port": ..., "pid": ...}
    log_file: Path


def create_time(pid: int) -> float | None:
    """psutil's create_time of `pid`, or None when no such (live) process exists."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def is_alive(pid: int | None, expected_create_time: float | None) -> bool:
    """True when `pid` runs and is the same process that was recorded (same create_time)."""
    if not pid or pid <= 0:
        return False
    actual = create_time(pid)
    if actual is None:
        return False
    if expected_create_time is None:
        return True
    # create_time is derived from boot time and clock ticks: equal to within a tick for the same process.
    return abs(actual - expected_create_time) < 0.05


def _reap(pid: int) -> None:
    """Collect `pid` if it is our child, so that it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pid: int, expected_create_time: float | None, timeout: float) -> bool:
    """Poll until the process is gone (or a zombie); True if it went within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not is_alive(pid, expected_create_time):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)


def stop_process(pid: int, expected_create_time: float | None, grace: float = 10.0, group: bool = False) -> bool:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns True if the process was running.

    With `group`, the signals go to the process group `pid` leads (a replica and its children).
    A pid whose create_time does not match is someone else's process and is left alone.
    """
    if not is_alive(pid, expected_create_time):
        _reap(pid)
        return False
    use_group = group and _leads_group(pid)
    _signal(pid, signal.SIGTERM, use_group)
    if not wait_gone(pid, expected_create_time, grace):
        _signal(pid, signal.SIGKILL, use_group)
        wait_gone(pid, expected_create_time, 10.0)
    elif use_group:
        # The leader left; members that ignored SIGTERM must not outlive it.
        _signal(pid, signal.SIGKILL, True)
    return True


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def read_port_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_port_file(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic write, so a starter polling the file never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(data)))
    os.replace(tmp, path)


def _log_tail(log_file: Path, lines: int = 20) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port_file(path: Path, pid: int, expected_create_time: float | None, timeout: float, log_file: Path | None = None) -> dict[str, Any]:
    """Wait until `path` holds a port file written by `pid`; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        data = read_port_file(path)
        if data is not None and data.get("pid") == pid:
            return data
        if not is_alive(pid, expected_create_time):
            tail = _log_tail(log_file) if log_file else ""
            raise RuntimeApiError(f"process {pid} exited before it was ready" + (f"; last log lines:\n{tail}" if tail else ""))
        if time.monotonic() >= deadline:
            raise RuntimeApiError(f"process {pid} did not write {path} within {timeout:.0f} s")
        time.sleep(_POLL)


# The shell forks the daemon into the background and exits at once, so the daemon is re-parented
# to init: it survives the caller and never becomes the caller's zombie. It prints the daemon's pid.
DETACH_SCRIPT = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


def start_daemon(
    argv: Sequence[str],
    *,
    port_file: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> DaemonInfo:
    """Start `argv` detached (own session, output appended to `log_file`), wait for its port file.

    The daemon must write `{"port": ..., "pid": <its pid>}` to `port_file` once it listens.
    On failure the daemon is stopped and RuntimeApiError says why (with the log's last lines).
    """
    port_file.unlink(missing_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    launcher = subprocess.run(
        ["/bin/sh", "-c", DETACH_SCRIPT, "sh", str(log_file), *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        timeout=30,
        check=False,
    )
    try:
        pid = int(launcher.stdout.strip())
    except ValueError as exc:
        raise RuntimeApiError(f"could not start {argv[0]}: {launcher.stderr.strip() or 'no pid reported'}") from exc
    started = create_time(pid)
    try:
        ports = wait_for_port_file(port_file, pid, started, timeout, log_file)
    except RuntimeApiError:
        stop_process(pid, started, grace=2.0)
        raise
    return DaemonInfo(pid=pid, create_time=started or 0.0, ports=ports, log_file=log_file)
