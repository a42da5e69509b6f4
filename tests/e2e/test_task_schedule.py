"""A scheduled task (dstack's `schedule: {cron: ...}`) through the real CLI on the local backend.

The runner's clock runs 20× fast here (GPUSTACK_TASK_CLOCK_SPEED, read only by the task runner), so
`* * * * *` comes every 3 real seconds and two runs are seen without waiting two minutes.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project, WideProject, example_project, processes_under, wait_until

pytestmark = pytest.mark.slow

TICK = """\
    type: task
    name: train
    commands: ["echo tick attempt $GPUSTACK_TASK_ATTEMPT"]
    resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
    schedule:
      cron: "* * * * *"
"""

# Sleeps 6 real seconds, two scheduler minutes: the next cron time comes while it still runs.
SLOW = """\
    type: task
    name: slow
    commands: [echo slow run; sleep 6]
    resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
    schedule:
      cron: ["* * * * *"]
"""


def _status(project: Project, name: str) -> dict[str, Any]:
    tasks = project.outputs()["tasks"]
    return json.loads((Path(tasks[name]) / "status.json").read_text())


def _finished_runs(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in status["schedule"]["runs"] if r["result"]]


@pytest.mark.timeout(900)  # about eight CLI runs, an `up` and a `destroy`: minutes on a busy machine
def test_scheduled_task_runs_at_each_cron_time_and_never_overlaps(tmp_path: Path) -> None:
    with example_project(tmp_path, "task", kind=WideProject) as project:
        project.extra_env["GPUSTACK_TASK_CLOCK_SPEED"] = "20"
        (project.config / "train.gpustack.yml").write_text(textwrap.dedent(TICK))
        (project.config / "slow.gpustack.yml").write_text(textwrap.dedent(SLOW))
        plan = project.cli("plan", "task").stdout
        assert "on schedule * * * * * (UTC)" in plan
        up = project.cli("up", "task", "--yes", "--wait")
        assert "task train: scheduled, next run" in up.stdout

        def two_runs() -> Any:
            status = _status(project, "train")
            return status if len(_finished_runs(status)) >= 2 else None

        status = wait_until(two_runs, 180, interval=0.5, what="two scheduled runs")
        assert [r["result"] for r in _finished_runs(status)][:2] == ["succeeded", "succeeded"]
        first, second = _finished_runs(status)[:2]
        assert second["scheduled_for"] - first["scheduled_for"] == 60  # consecutive cron minutes
        logs = project.cli("logs", "train").stdout
        assert "--- run 1, attempt 1, node 0" in logs and "--- run 2, attempt 1, node 0" in logs
        assert logs.count("tick attempt 1") >= 2  # each run printed its line
        shown = project.cli("status").stdout
        row = next(line for line in shown.splitlines() if "cron * * * * *" in line and " train " in f" {line} ")
        assert "next run 20" in row and "UTC" in row

        def skipped() -> Any:
            slow = _status(project, "slow")
            return slow if slow["schedule"]["skipped_total"] >= 1 else None

        slow = wait_until(skipped, 180, interval=0.5, what="a cron time skipped while the slow run still goes")
        assert "was still going" in slow["schedule"]["skipped"][0]["reason"]
        runs = slow["schedule"]["runs"]
        for a, b in zip(runs, runs[1:]):  # no run started before the previous one finished
            assert a["finished_at"] is not None and b["started_at"] >= a["finished_at"]

        project.cli("destroy", "--yes")
        wait_until(lambda: not [p for p in processes_under(project.root) if "runtime.tasks" in " ".join(p.cmdline())],
                   60, what="the task runners to stop")
