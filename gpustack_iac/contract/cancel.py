"""The one "stop waiting" flag of this process: set by the engine on the first Ctrl-C, read by providers.

A provider that waits (a service becoming ready, up to minutes) runs in an engine thread that Ctrl-C
cannot reach; the engine waits for those threads before it returns. Waits poll through `wait()`, so
the first Ctrl-C ends them at once and `up` can say what is left and how to resume.
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


class Stopped(Exception):
    """A wait ended because the user interrupted the operation."""


def request_stop() -> None:
    _STOP.set()


def reset() -> None:
    """Clear the flag (before an operation starts)."""
    _STOP.clear()


def wait(seconds: float) -> None:
    """Sleep up to `seconds`; raise Stopped as soon as a stop is requested."""
    if _STOP.wait(seconds):
        raise Stopped("stopped waiting: interrupted")
