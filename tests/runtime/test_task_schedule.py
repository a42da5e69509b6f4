"""Scheduled tasks: dstack's cron (UTC, weekdays from Monday) as the task runner reads it, the next
run time, and the schedule refused where it is not honoured (the e2e is tests/e2e/test_task_schedule.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gpustack_iac import support
from gpustack_iac.errors import ConfigError
from gpustack_iac.runtime.tasks.model import ScheduleDef, TaskDefinitionError, parse_task
from gpustack_iac.runtime.tasks.schedule import Clock, next_time
from gpustack_iac.spec.loader import load_text
from gpustack_iac.spec.models import posix_cron
from tests.support.wait import wait_until_async

TASK = "type: task\nname: nightly\ncommands: [echo hi]\n"


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("dstack, posix", [
    ("15 23 * * *", "15 23 * * *"),
    ("0 8 * * 0", "0 8 * * 1"),  # dstack's 0 is Monday
    ("0 8 * * 0-4", "0 8 * * 1-5"),
    ("0 8 * * 5,6", "0 8 * * 6,7"),  # Saturday, Sunday
    ("0 8 * * mon-fri", "0 8 * * mon-fri"),
    ("*/10 8-10 * * *", "*/10 8-10 * * *"),
    ("0 8 * * */2", "0 8 * * 1-7/2"),  # Monday, Wednesday, Friday, Sunday
])
def test_dstack_weekdays_count_from_monday(dstack: str, posix: str) -> None:
    assert posix_cron(dstack) == posix


def test_sunday_in_dstack_numbering_is_sunday() -> None:
    sunday = _at("2026-12-06T00:00:00")  # a Sunday
    got = next_time(ScheduleDef(crons=(posix_cron("30 9 * * 6"),)), sunday - 1)
    assert datetime.fromtimestamp(got, tz=timezone.utc).isoformat() == "2026-12-06T09:30:00+00:00"


def test_next_time_is_the_earliest_of_several_crons() -> None:
    schedule = ScheduleDef(crons=("0 12 * * *", "30 6 * * *"))
    assert next_time(schedule, _at("2026-12-07T06:10:00")) == _at("2026-12-07T06:30:00")
    assert next_time(schedule, _at("2026-12-07T06:30:00")) == _at("2026-12-07T12:00:00")


@pytest.mark.parametrize("cron, why", [("* * * *", "5-field"), ("* * * * 7", "out of range"), ("61 * * * *", "5-field")])
def test_bad_cron_is_one_error_naming_the_property(cron: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(TASK + f"schedule: {{cron: '{cron}'}}\n")
    [diag] = caught.value.diagnostics
    assert why in diag.message and "schedule.cron" in diag.path


def test_cron_as_one_string_or_a_list() -> None:
    one = load_text(TASK + "schedule: {cron: '0 8 * * mon-fri'}\n").tasks[0]
    many = load_text(TASK + "schedule:\n  cron: ['0 8 * * 0', '0 20 * * *']\n").tasks[0]
    assert one.schedule is not None and one.schedule.cron == ["0 8 * * mon-fri"]
    assert many.schedule is not None and many.schedule.posix() == ["0 8 * * 1", "0 20 * * *"]


@pytest.mark.parametrize("doc", [
    "type: service\nname: web\nport: 8000\ncommands: [python3 app.py]\nschedule: {cron: '0 8 * * mon-fri'}\n",
    "type: dev-environment\nname: box\nschedule: {cron: '0 8 * * mon-fri'}\n",
])
@pytest.mark.parametrize("backend", ["local", "ssh", "aws"])
def test_schedule_of_a_service_or_dev_environment_is_refused_by_name(doc: str, backend: str) -> None:
    spec = load_text(doc)
    [config] = spec.services or spec.dev_environments
    [finding] = support.check(config, backend)
    assert finding.status == support.REFUSED and finding.path == "schedule" and f"backend {backend}" in finding.message


def test_task_schedule_is_honoured_on_fleet_hosts() -> None:
    task = load_text(TASK + "schedule: {cron: '* * * * *'}\n").tasks[0]
    assert support.check(task, "local") == [] and support.check(task, "ssh") == []


def test_runner_refuses_a_definition_with_a_bad_cron() -> None:
    with pytest.raises(TaskDefinitionError, match="schedule.crons"):
        parse_task({"name": "t", "run_id": "r", "commands": ["true"], "hosts": [], "schedule": {"crons": ["nope"]}})


def test_a_fast_clock_runs_ahead_of_real_time() -> None:
    clock = Clock(speed=60)
    assert clock.real_seconds(60) == 1.0 and clock.real_seconds(-5) == 0.0
    with pytest.raises(ValueError):
        Clock(speed=0)


class _HeldRun:
    """A stand-in for TaskRunner: each run lasts until the test releases it."""

    release = None  # an asyncio.Event, set by the test
    started: list[int] = []

    def __init__(self, task, tokens, state_dir, run_number=0, overlay=None):  # type: ignore[no-untyped-def]
        self.run_number, self._overlay, self._state_dir = run_number, overlay, state_dir

    def request_stop(self) -> None:
        assert _HeldRun.release is not None
        _HeldRun.release.set()

    async def run(self) -> str:
        from gpustack_iac.runtime.tasks.status import write_status

        _HeldRun.started.append(self.run_number)
        snap = {"name": "t", "run_id": "r", "state": "running", "reason": "", "nodes": 1, "attempts": []}
        write_status(self._state_dir, self._overlay(snap))
        assert _HeldRun.release is not None
        await _HeldRun.release.wait()
        write_status(self._state_dir, self._overlay({**snap, "state": "succeeded"}))
        return "succeeded"


def test_a_cron_time_during_a_run_is_skipped_and_recorded(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from gpustack_iac.runtime.tasks import schedule as sched
    from gpustack_iac.runtime.tasks.status import read_status

    monkeypatch.setattr(sched, "TaskRunner", _HeldRun)
    _HeldRun.started = []
    task = parse_task({"name": "t", "run_id": "r", "commands": ["true"], "hosts": [],
                       "schedule": {"crons": ["* * * * *"], "expressions": ["* * * * *"]}})

    async def scenario() -> dict:
        _HeldRun.release = asyncio.Event()
        scheduled = sched.ScheduledTask(task, {}, tmp_path, sched.Clock(speed=600))  # a cron minute every 0.1 s
        job = asyncio.create_task(scheduled.run())
        # Until two cron times came while run 1 was held. Read from the scheduler: status.json is
        # written by the held run, so the skips reach the file only once that run ends (the old
        # loop on the file never saw them and always ran out its 30 s).
        await wait_until_async(lambda: scheduled._schedule_status()["skipped_total"] >= 2, 30.0,
                               what="two skipped cron times")
        assert _HeldRun.started == [1], "no second run while the first one goes"
        _HeldRun.release.set()
        await wait_until_async(lambda: len(_HeldRun.started) >= 2, 30.0, what="the second run")
        scheduled.request_stop()
        assert await job == "stopped"
        return read_status(tmp_path) or {}

    status = asyncio.run(scenario())
    assert _HeldRun.started[:2] == [1, 2]
    assert status["state"] == "stopped" and status["schedule"]["skipped_total"] >= 2
    assert all("run 1 was still going" in s["reason"] for s in status["schedule"]["skipped"][:2])
    assert status["schedule"]["runs"][0]["result"] == "succeeded"
