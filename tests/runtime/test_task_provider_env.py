"""The task provider: the runner gets the daemon allow-list (never the passphrase), tokens stay out of its files,
and delete stops the run and its nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import psutil
import pytest

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.tasks.status import read_status
from gpustack_iac.providers.task import TaskProvider
from tests.runtime.conftest import AgentProcess


def test_runner_environment_has_tokens_but_no_passphrase(agent_factory: Callable[[], AgentProcess], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "do-not-leak")
    agent = agent_factory()
    props = {"definition": {"name": "t", "commands": ["sleep 30"], "nodes": 1}, "run_id": "abc123abc123",
             "hosts": [{"name": "h0", "url": agent.url, "token": agent.token, "labels": {}}], "state_dir": str(tmp_path / "t")}
    provider = TaskProvider()
    created = provider.create(props)
    outs = created.outs
    try:
        environ = psutil.Process(outs["pid"]).environ()
        assert "GPUSTACK_PASSPHRASE" not in environ
        assert agent.token not in (tmp_path / "t" / "task.json").read_text()
        status = read_status(tmp_path / "t")
        assert status is not None and status["state"] == "running"
    finally:
        provider.delete("t", outs)
    assert not procs.is_alive(outs["pid"], outs["create_time"])
    assert agent.call(lambda c: c.list()) == []
    assert not (tmp_path / "t").exists()


def test_a_run_whose_runner_died_reads_as_gone_and_is_cleaned_up_on_rerun(agent_factory: Callable[[], AgentProcess],
                                                                            tmp_path: Path) -> None:
    import os
    import signal

    agent = agent_factory()
    props = {"definition": {"name": "t", "commands": ["sleep 60"], "nodes": 1}, "run_id": "abc123abc123",
             "hosts": [{"name": "h0", "url": agent.url, "token": agent.token, "labels": {}}], "state_dir": str(tmp_path / "t")}
    provider = TaskProvider()
    outs = provider.create(props).outs
    assert provider.read("t", outs).id == "t"
    os.kill(outs["pid"], signal.SIGKILL)  # a reboot, as far as the runner is concerned
    assert procs.wait_gone(outs["pid"], outs["create_time"], 10)
    assert provider.read("t", outs).id is None  # interrupted: the next up runs it again
    [orphan] = agent.call(lambda c: c.list())
    again = provider.create(props).outs
    try:
        [fresh] = agent.call(lambda c: c.list())
        assert fresh["pid"] != orphan["pid"]  # the dead run's node was stopped first: one node, the new one
        assert not procs.is_alive(orphan["pid"], None)
    finally:
        provider.delete("t", again)
