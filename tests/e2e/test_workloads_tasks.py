"""Tasks through the real CLI on the local backend: two agents, a two-node rendezvous over TCP,
a failing rank stopping the other, retries, no re-run of a finished task, destroy of a running one."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import Project, WideProject, example_project, processes_under, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def task_project(tmp_path: Path) -> Iterator[Project]:
    with example_project(tmp_path, "task", kind=WideProject) as project:
        yield project


def _write_task(project: Project, body: str) -> None:
    (project.config / "train.gpustack.yml").write_text(textwrap.dedent(body))


def _status(project: Project) -> dict:
    tasks = project.outputs()["tasks"]
    return json.loads((Path(tasks["train"]) / "status.json").read_text())


def test_two_node_task_rendezvous_succeeds(task_project: Project) -> None:
    up = task_project.cli("up", "task", "--yes", "--wait")
    assert "task train: succeeded" in up.stdout
    status = task_project.cli("status", check=True).stdout
    assert "succeeded" in status
    logs = task_project.cli("logs", "train").stdout
    assert "[node 0] rank 0: got 'hello from rank 1'" in logs
    assert "[node 1] rank 1: got 'welcome from rank 0 to 1'" in logs
    only_one = task_project.cli("logs", "train", "--node", "1").stdout
    assert "rank 1: done" in only_one and "rank 0" not in only_one.replace("from rank 0", "")
    first = _status(task_project)
    assert {n["host"] for n in first["attempts"][0]["nodes"]} == {"trainers-0", "trainers-1"}


def test_finished_task_is_not_rerun_unless_its_spec_changes(task_project: Project) -> None:
    task = """\
        type: task
        name: train
        commands: [echo run $RUN]
        env: [RUN=1]
        resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
    """
    _write_task(task_project, task)
    task_project.cli("up", "task", "--yes", "--wait")
    first = _status(task_project)
    # A later up with the same spec leaves the finished run alone.
    assert "No changes" in task_project.cli("up", "task", "--yes").stdout
    assert _status(task_project)["started_at"] == first["started_at"]
    # A changed spec is a new run, and the plan says so.
    _write_task(task_project, task.replace("RUN=1", "RUN=2"))
    plan = task_project.cli("plan", "task").stdout
    line = next(ln for ln in plan.splitlines() if "task train:" in ln)
    assert "env changed → re-run" in line
    task_project.cli("up", "task", "--yes", "--wait")
    assert _status(task_project)["run_id"] != first["run_id"]
    assert "run 2" in task_project.cli("logs", "train").stdout


def test_failing_rank_fails_the_task_and_stops_rank_zero(task_project: Project) -> None:
    _write_task(task_project, """\
        type: task
        name: train
        nodes: 2
        commands: [python3 rendezvous.py]
        env: [FAIL_RANK=1]
        resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
    """)
    up = task_project.cli("up", "task", "--yes", "--wait", check=False)
    assert up.returncode != 0
    assert "task train: failed" in up.stdout and "node 1 on trainers-1 exited with code 3" in up.stdout
    status = _status(task_project)
    rank0, rank1 = status["attempts"][0]["nodes"]
    assert rank1["exit_code"] == 3
    assert rank0["stopped"]
    shown = task_project.cli("status").stdout
    assert "failed" in shown and "(stopped)" in shown


def test_retry_with_growing_delays_shown_in_status(task_project: Project) -> None:
    counter = task_project.root / "count"
    _write_task(task_project, f"""\
        type: task
        name: train
        commands:
          - n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; echo attempt $n; [ $n -ge 3 ]
        resources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}
        retry:
          on_events: [error]
          duration: 1m
    """)
    task_project.cli("up", "task", "--yes", "--wait")
    status = _status(task_project)
    attempts = status["attempts"]
    assert [a["result"] for a in attempts] == ["failed", "failed", "succeeded"]
    gaps = [b["started_at"] - a["finished_at"] for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95  # 1 s × [0.5, 1], then 2 s × [0.5, 1]
    shown = task_project.cli("status").stdout
    assert "3 (succeeded)" in shown and "1 (failed)" in shown


def test_destroy_stops_a_running_task(task_project: Project) -> None:
    _write_task(task_project, """\
        type: task
        name: train
        commands: [echo started; sleep 300]
        resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
    """)
    task_project.cli("up", "task", "--yes")
    status = _status(task_project)
    assert status["state"] == "running"
    sleepers = lambda: [p for p in processes_under(task_project.root) if "sleep 300" in " ".join(p.cmdline())]  # noqa: E731
    wait_until(sleepers, 30, what="the task's process")
    task_project.cli("destroy", "--yes")
    wait_until(lambda: not sleepers(), 30, what="the task's process to stop")


def test_logs_follow_streams_until_the_task_ends(task_project: Project) -> None:
    _write_task(task_project, """\
        type: task
        name: train
        commands: [for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done]
        resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
    """)
    task_project.cli("up", "task", "--yes")
    followed = task_project.cli("logs", "train", "-f", timeout=120).stdout
    assert all(f"line {i}" in followed for i in range(1, 7))
    assert _status(task_project)["state"] == "succeeded"
