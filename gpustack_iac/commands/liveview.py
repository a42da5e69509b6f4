"""What `up` and `destroy` show while a step runs for more than two seconds.

On a terminal: one live line per such step and per provider activity inside it (contract/progress.py:
"host gpu-1: uploading the wheelhouse (40 files)  23.1 of 88.0 MB, 12/40 files  14 s"), redrawn four
times a second and gone when the work ends; the step lines print above it as before. Not on a
terminal (a CI log): nothing redraws, so each activity that ran for over two seconds gets one line
when it ends, saying what it moved and how long it took (the step's own end line has its time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.text import Text

from gpustack_iac.contract import progress
from gpustack_iac.contract.progress import Activity

SHOW_AFTER = 2.0  # seconds: shorter work is not worth a line


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def figures(activity: Activity) -> str:
    """What it has moved so far: "23.1 of 88.0 MB, 12 files" (empty when it counts nothing)."""
    parts = []
    if activity.unit == "bytes":
        parts.append(f"{_size(activity.done)} of {_size(activity.total)}" if activity.total is not None
                     else _size(activity.done))
    elif activity.unit:
        parts.append(f"{activity.done}/{activity.total} {activity.unit}" if activity.total is not None
                     else f"{activity.done} {activity.unit}")
    if activity.files:
        parts.append(f"{activity.files} files")
    return ", ".join(parts)


def finished_line(activity: Activity) -> str:
    moved = figures(activity)
    verdict = "done" if activity.ok else "failed"
    return f"  · {activity.what}: {verdict}{f' ({moved})' if moved else ''} in {activity.elapsed():.1f} s"


class LiveView:
    """A progress.Listener, plus the engine's running steps (told by the step printer)."""

    def __init__(self, console: Console, show_after: float = SHOW_AFTER) -> None:
        self.console = console
        self.show_after = show_after
        self._lock = threading.Lock()
        self._activities: dict[int, Activity] = {}
        self._steps: dict[str, tuple[str, float]] = {}

    # --- progress.Listener (called from the engine's worker threads) ---------------------------

    def started(self, activity: Activity) -> None:
        with self._lock:
            self._activities[id(activity)] = activity

    def updated(self, activity: Activity) -> None:
        pass  # the live line reads the activity's figures when it redraws

    def finished(self, activity: Activity) -> None:
        with self._lock:
            self._activities.pop(id(activity), None)
        if not self.console.is_terminal and activity.elapsed() >= self.show_after:
            self.console.print(finished_line(activity), highlight=False, markup=False)

    # --- the engine's steps ---------------------------------------------------------------------

    def step_started(self, key: str, label: str) -> None:
        with self._lock:
            self._steps[key] = (label, time.monotonic())

    def step_finished(self, key: str) -> None:
        with self._lock:
            self._steps.pop(key, None)

    def lines(self, now: float | None = None) -> list[str]:
        """The live lines: each step and activity running for over `show_after` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            steps = list(self._steps.values())
            activities = list(self._activities.values())
        out = [f"  ⋯ {label}  {now - since:.0f} s" for label, since in steps if now - since >= self.show_after]
        for act in activities:
            if act.elapsed(now) >= self.show_after:
                moved = figures(act)
                out.append(f"    ↳ {act.what}{f'  {moved}' if moved else ''}  {act.elapsed(now):.0f} s")
        return out

    def _render(self) -> Text:
        return Text("\n".join(self.lines()))

    @contextmanager
    def showing(self) -> Iterator[LiveView]:
        with progress.listening(self):
            if not self.console.is_terminal:
                yield self
                return
            with Live(get_renderable=self._render, console=self.console, refresh_per_second=4, transient=True):
                yield self
