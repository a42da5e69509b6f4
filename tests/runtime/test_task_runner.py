"""The task runner against real agents: nodes on distinct hosts, the distributed-training
environment, a failed node stopping the others, retries with growing back-off."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any, Callable

from gpustack_iac.runtime.tasks.model import parse_task
from gpustack_iac.runtime.tasks.runner import TaskRunner
from gpustack_iac.runtime.tasks.status import node_log, read_status
from tests.runtime.conftest import AgentProcess

REPO = Path(__file__).resolve().parents[2]
RENDEZVOUS = REPO / "examples" / "task" / "rendezvous.py"


def _definition(agents: list[AgentProcess], **extra: Any) -> dict[str, Any]:
    base = {"name": "train", "run_id": "0123456789ab", "nodes": len(agents),
            "commands": [f"{sys.executable} {RENDEZVOUS}"],
            "hosts": [{"name": f"h{i}", "url": a.url, "labels": {"backend": "local"}} for i, a in enumerate(agents)]}
    base.update(extra)
    return base


def _run(agents: list[AgentProcess], state_dir: Path, **extra: Any) -> str:
    task = parse_task(_definition(agents, **extra))
    tokens = {f"h{i}": a.token for i, a in enumerate(agents)}
    return asyncio.run(TaskRunner(task, tokens, state_dir, random.Random(7)).run())


def test_two_nodes_rendezvous_and_succeed(agent_factory: Callable[[], AgentProcess], tmp_path: Path) -> None:
    agents = [agent_factory(), agent_factory()]
    assert _run(agents, tmp_path) == "succeeded"
    status = read_status(tmp_path)
    assert status is not None and status["state"] == "succeeded"
    nodes = status["attempts"][0]["nodes"]
    assert {n["host"] for n in nodes} == {"h0", "h1"}
    assert [n["exit_code"] for n in nodes] == [0, 0]
    assert "got 'hello from rank 1'" in node_log(tmp_path, 0).read_text()
    assert "welcome from rank 0 to 1" in node_log(tmp_path, 1).read_text()
    # Finished nodes are removed from their agents: nothing is left behind.
    assert all(a.call(lambda c: c.list()) == [] for a in agents)


def test_failed_node_stops_the_others(agent_factory: Callable[[], AgentProcess], tmp_path: Path) -> None:
    agents = [agent_factory(), agent_factory()]
    assert _run(agents, tmp_path, env={"FAIL_RANK": "1"}) == "failed"
    status = read_status(tmp_path)
    assert status is not None
    assert "node 1 on h1 exited with code 3" in status["reason"]
    rank0, rank1 = status["attempts"][0]["nodes"]
    assert rank1["exit_code"] == 3 and not rank1["stopped"]
    assert rank0["stopped"] and rank0["state"] == "stopped"
    assert all(a.call(lambda c: c.list()) == [] for a in agents)


def test_retry_until_success_with_growing_delays(agent: AgentProcess, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    # Fails on the first two attempts, succeeds on the third.
    script = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
              'echo "attempt $n"; [ $n -ge 3 ]')
    state = tmp_path / "run"
    result = _run([agent], state, commands=[script], retry={"on_events": ["error"], "duration": 60, "base": 0.5})
    assert result == "succeeded"
    status = read_status(state)
    assert status is not None
    attempts = status["attempts"]
    assert [a.get("result") for a in attempts] == ["failed", "failed", "succeeded"]
    delays = [a["delay_before"] for a in attempts]
    assert delays[0] == 0 and 0.25 <= delays[1] <= 0.5 and 0.5 <= delays[2] <= 1.0
    # The gap between attempts is at least the recorded delay.
    for prev, cur in zip(attempts, attempts[1:]):
        assert cur["started_at"] - prev["finished_at"] >= cur["delay_before"] - 0.05


def test_retry_stops_at_its_duration(agent: AgentProcess, tmp_path: Path) -> None:
    result = _run([agent], tmp_path, commands=["exit 1"], retry={"on_events": ["error"], "duration": 3, "base": 0.4})
    assert result == "failed"
    status = read_status(tmp_path)
    assert status is not None
    assert "retry.duration 3 s is used up" in status["reason"]
    attempts = status["attempts"]
    assert len(attempts) >= 3
    assert attempts[-1]["started_at"] - attempts[0]["started_at"] <= 3


def test_no_capacity_when_fewer_hosts_than_nodes(agent: AgentProcess, tmp_path: Path) -> None:
    definition = _definition([agent], nodes=2)
    task = parse_task(definition)
    assert asyncio.run(TaskRunner(task, {"h0": agent.token}, tmp_path).run()) == "failed"
    status = read_status(tmp_path)
    assert status is not None and "needs 2 hosts, 1 fit" in status["reason"]


def test_max_duration_stops_a_long_task(agent: AgentProcess, tmp_path: Path) -> None:
    assert _run([agent], tmp_path, commands=["sleep 60"], max_duration=1.5) == "failed"
    status = read_status(tmp_path)
    assert status is not None and "max_duration" in status["reason"]
    assert status["attempts"][0]["nodes"][0]["stopped"]
