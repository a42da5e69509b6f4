"""Live progress inside a long step: what a provider is doing, how far it is, since when.

A step such as an SSH host's first install spends a minute building and uploading the wheelhouse;
the step's own start and end lines say nothing in between. Providers wrap such work in `activity`
("host gpu-1: uploading the wheelhouse", 88 MB in 40 files) and advance it as bytes move; whoever
listens (the CLI's progress view) shows it. With no listener, reporting costs a list lookup.

Providers run in the engine's process (the embedded engine), on its worker threads: listeners are
called from those threads and must be thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Activity:
    """One piece of work inside a step. `total`/`done` count `unit`s ("bytes", "files") when known."""

    what: str
    total: int | None = None
    unit: str = ""
    files: int = 0  # files finished, for work that moves several
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    ok: bool = True

    def advance(self, amount: int) -> None:
        self.done += amount
        _notify("updated", self)

    def file_done(self) -> None:
        self.files += 1
        _notify("updated", self)

    def elapsed(self, now: float | None = None) -> float:
        end = self.ended if self.ended is not None else (time.monotonic() if now is None else now)
        return end - self.started


class Listener(Protocol):
    def started(self, activity: Activity) -> None: ...

    def updated(self, activity: Activity) -> None: ...

    def finished(self, activity: Activity) -> None: ...


_listeners: list[Listener] = []
_guard = threading.Lock()


def _notify(event: str, activity: Activity) -> None:
    with _guard:
        listeners = list(_listeners)
    for listener in listeners:
        getattr(listener, event)(activity)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """`listener` hears every activity started until the block ends."""
    with _guard:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _guard:
            _listeners.remove(listener)


@contextmanager
def activity(what: str, total: int | None = None, unit: str = "") -> Iterator[Activity]:
    """Report the block as `what`; it ends (ok or failed) when the block does."""
    current = Activity(what, total, unit)
    _notify("started", current)
    try:
        yield current
    except BaseException:
        current.ok = False
        raise
    finally:
        current.ended = time.monotonic()
        _notify("finished", current)
