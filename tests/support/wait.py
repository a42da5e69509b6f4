"""Waiting for conditions and stopping what a test started: one copy of each, for the whole suite.

No test may depend on an idle machine, so tests wait for a condition with a generous bound (never a
fixed sleep), and every server a test starts runs in its own process group and is stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition",
               proc: subprocess.Popen[Any] | None = None, explain: Callable[[], str] | None = None) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail after `timeout` seconds.

    An exception from the predicate counts as "not yet" (things raise while they start) and is shown if
    time runs out. With `proc`, fail at once when that process exits first; `explain` adds context
    (a log tail) to the failure."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - a poll may fail while things start; keep the last error
            last = exc
        else:
            if last:
                return last
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process {proc.args!r} exited ({proc.returncode}) before {what}"
                                 + (f"\n{explain()}" if explain else ""))
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}"
                                 + (f"\n{explain()}" if explain else ""))
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
                           what: str = "condition") -> T:
    """`wait_until` inside a running event loop (the servers under test share it): yields while polling."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(interval)


def stop_group(proc: subprocess.Popen[Any], grace: float = 30.0) -> None:
    """Stop a process started with `start_new_session=True` and everything in its group:
    SIGTERM, up to `grace` seconds to exit, then SIGKILL. Safe to call on one that already exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def exited_stderr(proc: subprocess.Popen[bytes] | None) -> str:
    """The tail of a finished process's stderr (for a failure message); empty while it runs."""
    if proc is None or proc.poll() is None or proc.stderr is None:
        return ""
    return proc.stderr.read().decode(errors="replace")[-2000:]
