"""A detached supervisor for hosts without systemd: keep one command running, restarting it with back-off.

`python -m gpustack_iac.runtime.watchdog --pid-file F --log-file L -- ARGV...` detaches from its
caller (new session, stdin from /dev/null), starts ARGV with its output appended to L, and starts it
again when it exits: at once the first time, then with a delay doubling up to a ceiling, reset once
a run has lasted long enough. SIGTERM stops the child (SIGTERM, then SIGKILL after a grace) and the
watchdog. F holds the watchdog's pid while it runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FIRST_DELAY = 0.1
MAX_DELAY = 10.0
STABLE_AFTER = 10.0  # a run this long resets the back-off
GRACE = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gpustack_iac.runtime.watchdog")
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--log-file", type=Path, required=True)
    parser.add_argument("--foreground", action="store_true", help="do not detach (tests, systemd)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("a command to supervise is required after --")
    return args


def _detach() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def run(args: argparse.Namespace) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    args.pid_file.parent.mkdir(parents=True, exist_ok=True)
    args.pid_file.write_text(str(os.getpid()))
    args.log_file.parent.mkdir(parents=True, exist_ok=True)
    delay = FIRST_DELAY
    try:
        while not stopping:
            started = time.monotonic()
            with args.log_file.open("ab") as log:
                child = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            while child.poll() is None:
                try:
                    child.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
            if stopping:
                break
            delay = FIRST_DELAY if time.monotonic() - started > STABLE_AFTER else min(delay * 2, MAX_DELAY)
            deadline = time.monotonic() + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.05, delay))
        if child is not None and child.poll() is None:
            try:
                child.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        args.pid_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.foreground:
        _detach()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
