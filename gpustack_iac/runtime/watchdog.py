"""A daemon supervisor: runs one child command and restarts it when it dies.

    python -m gpustack_iac.runtime.watchdog --pid-file W.json --child-pid-file C.json \
        [--listen NAME=HOST:PORT ...] [--keep-env NAME ...] [--stop-grace 10] [--max-backoff 30] \
        -- COMMAND [ARG ...]

For hosts where systemd is not PID 1 (containers, SSH hosts, this project's local backend):

- **Restarts.** The first restart after a crash is immediate; each further crash within
  `--stable-after` seconds (default 10) of the last start doubles the delay (0.5 s, 1 s, 2 s, ...
  up to `--max-backoff`); a child that ran that long is considered healthy and the back-off resets.
- **Pid files.** `--pid-file` holds `{"pid", "create_time", "argv"}` of the watchdog,
  `--child-pid-file` holds `{"pid", "create_time", "restarts", "started_at", "watchdog"}` of the
  current child (`watchdog`: the pid of the watchdog that started it).
  A pid alone is no identity (pids are reused): a reader checks `create_time` too
  (`gpustack_iac.runtime.procs.is_alive`). `W.json.lock` is flock()ed for the watchdog's life, so a
  second watchdog for the same pid file exits with status 3 instead of starting a second child.
- **Listening sockets.** `--listen port=127.0.0.1:8080` binds the port in the watchdog and hands the
  socket to every child as descriptor N with `GPUSTACK_LISTEN_FDS=port=N` (see `listenfds.py`): a
  client connecting while the child restarts waits in the backlog instead of being refused.
- **Environment.** The child gets only the allow-listed part of the watchdog's environment
  (`envpolicy.daemon_env`: PATH, HOME, locale, Python and CA paths...) plus the names given with
  `--keep-env`. Secrets reach the child through files (`--token-file`), never the environment.
- **Stopping.** SIGTERM (or SIGINT, SIGHUP) to the watchdog sends SIGTERM to the child, waits
  `--stop-grace` seconds, then SIGKILLs it, removes both pid files and exits 0. The child gets
  SIGTERM as well if the watchdog itself is killed (PR_SET_PDEATHSIG), so a `kill -9` of the
  watchdog leaves no unsupervised child.

The child's output goes where the watchdog's goes (the starter redirects both to a log file).
Exit status: 0 after a stop, 2 for bad arguments, 3 when another watchdog holds the pid file.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from gpustack_iac.runtime import envpolicy, procs
from gpustack_iac.runtime.listenfds import LISTEN_FDS_ENV, format_fds

_POLL = 0.05
_PR_SET_PDEATHSIG = 1
EXIT_ALREADY_RUNNING = 3
# Printed (to the daemon's log) when a port to hold is taken: supervised.start tells it from other failures,
# so a starter that picked the port itself can pick another.
PORT_IN_USE = "watchdog: cannot listen: port in use:"


def read_pid_file(path: Path) -> dict[str, Any] | None:
    """A pid file's JSON, or None when it is missing or unreadable."""
    return procs.read_port_file(path)


def live_pid(path: Path) -> tuple[int, float] | None:
    """(pid, create_time) of the process a pid file records, when that very process still runs."""
    data = read_pid_file(path)
    if not data:
        return None
    pid, started = int(data.get("pid") or 0), data.get("create_time")
    return (pid, float(started)) if started is not None and procs.is_alive(pid, float(started)) else None


def backoff_delay(failures: int, max_backoff: float) -> float:
    """Delay after a crash preceded by `failures` quick crashes in a row: 0, then 0.5 s doubling up to the cap."""
    if failures <= 0:
        return 0.0
    return float(min(max_backoff, 0.5 * 2 ** (failures - 1)))


def _parse_listen(value: str) -> tuple[str, str, int]:
    name, sep, address = value.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not name or not colon or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=HOST:PORT")
    return name, host.strip("[]") or "127.0.0.1", int(port)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gpustack_iac.runtime.watchdog",
                                description="run one daemon, restart it when it dies, stop it on SIGTERM")
    p.add_argument("--pid-file", type=Path, required=True, help="where the watchdog records its own pid (JSON)")
    p.add_argument("--child-pid-file", type=Path, required=True, help="where it records the current child's pid (JSON)")
    p.add_argument("--listen", type=_parse_listen, action="append", default=[], metavar="NAME=HOST:PORT",
                   help="bind this socket here and pass it to each child (GPUSTACK_LISTEN_FDS)")
    p.add_argument("--keep-env", action="append", default=[], metavar="NAME",
                   help="also pass this environment variable to the child (beyond the allow-list)")
    p.add_argument("--stop-grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL of the child")
    p.add_argument("--max-backoff", type=float, default=30.0, help="longest delay between restarts")
    p.add_argument("--stable-after", type=float, default=10.0, help="seconds of uptime that reset the back-off")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        p.error("a command to run is required after --")
    return args


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # The kernel caps this at net.core.somaxconn; a burst during a restart queues here.
    sock.listen(4096)
    return sock


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the watchdog dies, whatever the cause."""

    def before_exec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the watchdog died between fork and prctl
            os._exit(1)

    return before_exec


class Watchdog:
    def __init__(self, args: argparse.Namespace, sockets: dict[str, socket.socket]) -> None:
        self.args = args
        self.sockets = sockets
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def _child_env(self) -> dict[str, str]:
        env = envpolicy.daemon_env(os.environ, self.args.keep_env)
        if self.sockets:
            env[LISTEN_FDS_ENV] = format_fds({name: s.fileno() for name, s in self.sockets.items()})
        return env

    def _start(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            self.args.command, stdin=subprocess.DEVNULL, env=self._child_env(),
            pass_fds=[s.fileno() for s in self.sockets.values()], preexec_fn=_die_with(os.getpid()),
        )
        procs.write_port_file(self.args.child_pid_file, {
            "pid": child.pid, "create_time": procs.create_time(child.pid), "restarts": self.restarts,
            "started_at": time.time(), "watchdog": os.getpid(),
        })
        return child

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(_POLL)

    def _stop_child(self, child: subprocess.Popen[bytes]) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(self.args.stop_grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def run(self) -> int:
        failures = 0
        while not self.stopping:
            try:
                self.child = child = self._start()
            except OSError as exc:
                print(f"watchdog: cannot start {self.args.command[0]}: {exc}", file=sys.stderr, flush=True)
                failures += 1
                self._sleep(backoff_delay(failures, self.args.max_backoff))
                continue
            started = time.monotonic()
            while child.poll() is None and not self.stopping:
                time.sleep(_POLL)
            if self.stopping:
                self._stop_child(child)
                break
            uptime = time.monotonic() - started
            # Crashes in a row: a child that ran `stable_after` seconds starts a new count at one.
            failures = 1 if uptime >= self.args.stable_after else failures + 1
            delay = backoff_delay(failures - 1, self.args.max_backoff)
            print(f"watchdog: child {child.pid} exited with {child.returncode} after {uptime:.1f}s; "
                  f"restarting in {delay:.1f}s", file=sys.stderr, flush=True)
            self.restarts += 1
            self._sleep(delay)
        self.args.child_pid_file.unlink(missing_ok=True)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.pid_file.parent.mkdir(parents=True, exist_ok=True)
    lock = open(args.pid_file.with_name(args.pid_file.name + ".lock"), "a")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_pid_file(args.pid_file) or {}
        print(f"watchdog: {args.pid_file} is held by a running watchdog (pid {holder.get('pid')})", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:
        sockets = {name: _bind(host, port) for name, host, port in args.listen}
    except OSError as exc:
        taken = exc.errno == errno.EADDRINUSE
        print(f"{PORT_IN_USE if taken else 'watchdog: cannot listen:'} {exc}", file=sys.stderr)
        return 1
    wd = Watchdog(args, sockets)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, wd.on_signal)
    me = os.getpid()
    procs.write_port_file(args.pid_file, {"pid": me, "create_time": procs.create_time(me), "argv": args.command})
    try:
        return wd.run()
    finally:
        args.pid_file.unlink(missing_ok=True)
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
