"""A scheduled task (dstack's `schedule: {cron: ...}`): a run at each time one of its cron
expressions matches, in UTC, for as long as the task is deployed.

Runs never overlap: a cron time that comes while the previous run still goes is skipped and
recorded (status.json's `schedule.skipped`), as cron's own "no second copy" rule would. Every run
is a `TaskRunner` (placement, retries, logs) numbered from 1; between runs the status file says
`scheduled` with the next run time and the last run's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from croniter import croniter

from gpustack_iac.runtime.tasks.model import ScheduleDef, TaskDef
from gpustack_iac.runtime.tasks.runner import TaskRunner
from gpustack_iac.runtime.tasks.status import FINAL_STATES, write_status

KEEP = 20  # the latest runs and skipped times status.json keeps
CLOCK_SPEED_ENV = "GPUSTACK_TASK_CLOCK_SPEED"  # tests only: how many scheduler seconds pass per real second


class Clock:
    """UTC wall time as the scheduler sees it. `speed` > 1 lets a test see minutes of cron times in
    seconds (the tests' only way to watch `* * * * *` fire twice without waiting two minutes)."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be above 0, got {speed}")
        self.speed = speed
        self._t0, self._m0 = time.time(), time.monotonic()

    def now(self) -> float:
        return self._t0 + (time.monotonic() - self._m0) * self.speed

    def real_seconds(self, seconds: float) -> float:
        return max(0.0, seconds / self.speed)


def next_time(schedule: ScheduleDef, after: float) -> float:
    """The first time after `after` (epoch seconds) that any of the expressions matches."""
    start = datetime.fromtimestamp(after, tz=timezone.utc)
    return min(float(croniter(c, start).get_next(float)) for c in schedule.crons)


class ScheduledTask:
    def __init__(self, task: TaskDef, tokens: dict[str, str], state_dir: Path, clock: Clock | None = None) -> None:
        assert task.schedule is not None
        self.task, self.schedule = task, task.schedule
        self.state_dir = state_dir
        self._tokens = tokens
        self._clock = clock or Clock()
        self._stop = asyncio.Event()
        self._runs: list[dict[str, Any]] = []
        self._skipped: list[dict[str, Any]] = []
        self._next_run_at: float | None = None
        self._current: TaskRunner | None = None
        self._job: asyncio.Task[str] | None = None
        self._last: dict[str, Any] = {}  # the latest run's own status (its attempts and nodes)

    def request_stop(self) -> None:
        self._stop.set()
        if self._current is not None:
            self._current.request_stop()

    # -- status ------------------------------------------------------------------------

    def _schedule_status(self) -> dict[str, Any]:
        return {"cron": list(self.schedule.expressions or self.schedule.crons), "next_run_at": self._next_run_at,
                "runs": self._runs[-KEEP:], "runs_total": len(self._runs), "skipped": self._skipped[-KEEP:],
                "skipped_total": len(self._skipped)}

    def overlay(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """A run's status as the scheduled task's: a finished run leaves the task `scheduled`."""
        self._last = dict(snapshot)
        out = dict(snapshot, run=self._current.run_number if self._current else None, schedule=self._schedule_status())
        if snapshot.get("state") in FINAL_STATES:
            out.update(state="scheduled", reason="", last_result=snapshot["state"], last_reason=snapshot.get("reason", ""))
        return out

    def _save(self, state: str = "scheduled", reason: str = "") -> None:
        """The task's status between runs (`scheduled`) or at its end (`stopped`)."""
        if self._last:
            status = self.overlay(self._last)
        else:
            status = {"name": self.task.name, "run_id": self.task.run_id, "nodes": self.task.nodes, "started_at": None,
                      "finished_at": None, "attempts": [], "max_duration": self.task.max_duration,
                      "schedule": self._schedule_status()}
        status.update(state=state, reason=reason)
        if state in FINAL_STATES:
            status["finished_at"] = time.time()
        write_status(self.state_dir, status)

    # -- the schedule ------------------------------------------------------------------

    async def run(self) -> str:
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        tick = next_time(self.schedule, self._clock.now())
        try:
            while not self._stop.is_set():
                self._next_run_at = tick
                if self._job is None or self._job.done():
                    self._save()  # idle: the new next run time (a run going writes its own status)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._clock.real_seconds(tick - self._clock.now()))
                if self._stop.is_set():
                    break
                if self._job is not None and not self._job.done():
                    number = self._runs[-1]["number"]
                    self._skipped.append({"at": tick, "reason": f"run {number} was still going"})
                else:
                    self._start(tick)
                tick = next_time(self.schedule, tick)
        finally:
            if self._job is not None:
                await asyncio.gather(self._job, return_exceptions=True)
            self._next_run_at = None
            self._save("stopped", "stopped by destroy or a new run")
        return "stopped"

    def _start(self, tick: float) -> None:
        number = len(self._runs) + 1
        record: dict[str, Any] = {"number": number, "scheduled_for": tick, "started_at": time.time(), "finished_at": None,
                                  "result": None}
        self._runs.append(record)
        self._current = TaskRunner(self.task, self._tokens, self.state_dir, run_number=number, overlay=self.overlay)
        job = asyncio.create_task(self._current.run())

        def done(finished: asyncio.Task[str]) -> None:
            record["finished_at"] = time.time()
            record["result"] = "error" if finished.cancelled() or finished.exception() else finished.result()
            if not self._stop.is_set():
                self._save()

        job.add_done_callback(done)
        self._job = job
