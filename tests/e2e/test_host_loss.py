"""Host loss on the local backend: an agent that stops answering has its replicas placed on the
other host; when it answers again, the replicas it kept running are stopped, never duplicated."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Project, http, wait_until

pytestmark = pytest.mark.slow


def _service(out: dict[str, Any]) -> dict[str, Any]:
    return json.loads(http("GET", out["control_url"] + "/control/services/hello", out["admin_token"])[1])


def _ready(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in status["groups"] for r in g["replicas"] if r["ready"]]


def _agent_pid(project: Project, agent: str) -> int:
    port_file = project.root / ".gpustack" / "local" / "local" / "dev" / "hosts" / agent / "agent.port.json"
    return int(json.loads(port_file.read_text())["pid"])


def test_lost_agent_replicas_replaced_and_fenced_on_return(local_project: Project) -> None:
    local_project.cli("up", str(local_project.config), "--yes")
    out = local_project.outputs()
    before = _ready(_service(out))
    assert len(before) == 3
    agent = before[0]["agent"]
    stale = {r["pid"] for r in before if r["agent"] == agent}
    pid = _agent_pid(local_project, agent)
    os.kill(pid, signal.SIGSTOP)  # the agent stops answering; its replicas keep running
    try:
        wait_until(lambda: (lambda rs: len(rs) == 3 and all(r["agent"] != agent for r in rs))(_ready(_service(out))),
                   60, 0.5, "replicas re-placed off the silent agent")
    finally:
        os.kill(pid, signal.SIGCONT)
    # Back: what it kept running is stopped (fenced), and the service keeps exactly its 3 replicas.
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in stale),
               60, 0.5, "stale replicas stopped")
    after = _ready(_service(out))
    assert len(after) == 3 and all(r["agent"] != agent for r in after)
    assert http("GET", out["endpoint"] + "/", out["token"])[0] == 200
