"""Start, find again and stop a daemon that runs under the watchdog, from the outside.

A starter (the local backend's providers) calls `adopt_or_start`: when a live watchdog already
supervises this daemon (found through its pid file: pid, create_time, and a command line that
names that very pid file) it waits for the daemon to be ready and returns it, so a repeated or
resumed `up` never starts a second copy. `stop` stops the watchdog, which stops its child, and
then anything the pid and port files still record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import psutil

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime import procs
from gpustack_iac.runtime.watchdog import PORT_IN_USE, live_pid, read_pid_file

_POLL = 0.05


class PortInUse(RuntimeApiError):
    """A port the watchdog was to hold is taken (picked free, then taken by another process before it bound)."""


@dataclass(frozen=True)
class Paths:
    """The files of one supervised daemon, all in the daemon's state directory."""

    pid_file: Path  # the watchdog's
    child_pid_file: Path
    port_file: Path  # written by the daemon once it listens: {"port": ..., "pid": <child pid>, ...}
    log_file: Path

    @classmethod
    def in_dir(cls, root: Path, name: str) -> "Paths":
        return cls(root / f"{name}.watchdog.json", root / f"{name}.pid.json", root / f"{name}.port.json", root / f"{name}.log")


@dataclass(frozen=True)
class Supervised:
    pid: int  # the watchdog: the stable identity of the daemon across restarts
    create_time: float
    child_pid: int
    ports: dict[str, Any]
    adopted: bool


def _cmdline_mentions(pid: int, text: str) -> bool:
    try:
        return text in " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def find_watchdog(paths: Paths) -> tuple[int, float] | None:
    """The live watchdog of this daemon, if any (pid reuse is ruled out by create_time and cmdline)."""
    found = live_pid(paths.pid_file)
    if found and _cmdline_mentions(found[0], str(paths.pid_file)):
        return found
    return None


def _log_tail(log_file: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(paths: Paths, watchdog: tuple[int, float], timeout: float, fresh: bool) -> tuple[int, dict[str, Any]]:
    """Wait until the watchdog's current child has written the port file; (child pid, port file).

    On a `fresh` start, a child that dies before it is ready fails at once (with the log's last
    lines) instead of crash-looping until the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        child = read_pid_file(paths.child_pid_file) or {}
        if child.get("watchdog") != watchdog[0]:
            child = {}  # left by an earlier watchdog that was killed: not this one's child
        ports = procs.read_port_file(paths.port_file)
        child_pid = int(child.get("pid") or 0)
        if ports is not None and child_pid and ports.get("pid") == child_pid and procs.is_alive(child_pid, child.get("create_time")):
            return child_pid, ports
        if not procs.is_alive(*watchdog):
            tail = _log_tail(paths.log_file)
            error = PortInUse if PORT_IN_USE in tail.rsplit("\n", 1)[-1] else RuntimeApiError
            raise error(f"the watchdog {watchdog[0]} exited before its daemon was ready; last log lines:\n{tail}")
        if fresh and int(child.get("restarts") or 0) > 0:
            raise RuntimeApiError("the daemon exited before it was ready; last log lines:\n" + _log_tail(paths.log_file))
        if time.monotonic() >= deadline:
            raise RuntimeApiError(f"the daemon did not write {paths.port_file} within {timeout:.0f} s")
        time.sleep(_POLL)


def start(argv: Sequence[str], paths: Paths, *, listen: Mapping[str, tuple[str, int]], env: Mapping[str, str],
          timeout: float = 60.0, stop_grace: float = 10.0) -> Supervised:
    """Start `argv` under a new watchdog (detached, own session) and wait until it is ready."""
    paths.port_file.unlink(missing_ok=True)
    paths.child_pid_file.unlink(missing_ok=True)
    watchdog_argv = [sys.executable, "-m", "gpustack_iac.runtime.watchdog", "--pid-file", str(paths.pid_file),
                     "--child-pid-file", str(paths.child_pid_file), "--stop-grace", str(stop_grace)]
    for name, (host, port) in listen.items():
        watchdog_argv += ["--listen", f"{name}={host}:{port}"]
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    launcher = subprocess.run(
        ["/bin/sh", "-c", procs.DETACH_SCRIPT, "sh", str(paths.log_file), *watchdog_argv, "--", *argv],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=dict(env), start_new_session=True,
        timeout=30, check=False,
    )
    try:
        pid = int(launcher.stdout.strip())
    except ValueError as exc:
        raise RuntimeApiError(f"could not start the watchdog: {launcher.stderr.strip() or 'no pid reported'}") from exc
    started = procs.create_time(pid)
    watchdog = (pid, started or 0.0)
    try:
        child_pid, ports = wait_ready(paths, watchdog, timeout, fresh=True)
    except RuntimeApiError:
        procs.stop_process(pid, started, grace=stop_grace)
        raise
    return Supervised(pid=pid, create_time=started or 0.0, child_pid=child_pid, ports=ports, adopted=False)


def adopt(paths: Paths, timeout: float = 60.0) -> Supervised | None:
    """The daemon a live watchdog already runs for these files, once ready; None when there is none."""
    watchdog = find_watchdog(paths)
    if watchdog is None:
        return None
    try:
        child_pid, ports = wait_ready(paths, watchdog, timeout, fresh=False)
    except RuntimeApiError:
        if not procs.is_alive(*watchdog):
            return None  # it was dying as we found it (a kill -9 not yet complete): nothing to adopt
        raise
    return Supervised(pid=watchdog[0], create_time=watchdog[1], child_pid=child_pid, ports=ports, adopted=True)


def stop(paths: Paths, grace: float = 10.0, also: tuple[int, float | None] | None = None) -> bool:
    """Stop the watchdog (which stops its child), then whatever the files still record; True if anything ran.

    `also` is a (pid, create_time) the caller recorded itself (a state file's), stopped as well.
    Only processes whose command line names these files are signalled: a reused pid is left alone.
    """
    stopped = False
    watchdog = find_watchdog(paths)
    if watchdog is not None:
        # The watchdog waits `grace` for its child, then SIGKILLs it: give it time to do so.
        stopped |= procs.stop_process(*watchdog, grace=grace + 5.0)
    if also is not None and also[0] and (watchdog is None or also[0] != watchdog[0]):
        if _cmdline_mentions(also[0], str(paths.pid_file.parent)):
            stopped |= procs.stop_process(also[0], also[1], grace=grace)
    child = live_pid(paths.child_pid_file)
    if child is not None:
        stopped |= procs.stop_process(*child, grace=grace)
    # A daemon started before supervision existed (or by hand) records itself only in the port file;
    # one whose files were deleted records itself nowhere. Its command line still names them.
    for pid in strays(paths):
        stopped |= procs.stop_process(pid, procs.create_time(pid), grace=grace)
    return stopped


def strays(paths: Paths) -> list[int]:
    """Live processes whose command line names this daemon's pid file or port file: watchdogs and
    daemons of this very resource, whatever the files on disk still say about them."""
    marks = (str(paths.pid_file), str(paths.port_file))
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.pid != os.getpid() and any(m in cmdline for m in marks) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def adopt_or_start(argv: Sequence[str], paths: Paths, *, listen: Mapping[str, tuple[str, int]],
                   env: Mapping[str, str], timeout: float = 60.0, stop_grace: float = 10.0) -> Supervised:
    """Idempotent start: adopt the running daemon, else clear leftovers and start one under a watchdog."""
    found = adopt(paths, timeout)
    if found is not None:
        return found
    # No watchdog, but perhaps its child (killed watchdog) or an unsupervised daemon: never run two.
    stop(paths, grace=stop_grace)
    return start(argv, paths, listen=listen, env=env, timeout=timeout, stop_grace=stop_grace)
