"""Routers and autoscaling through the stack: `up` of YAML, traffic through the local gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import Project, http, kill_all, processes_under, wait_until
from tests.support.loadgen import LoadGenerator

ECHO = Path(__file__).resolve().parents[1] / "runtime" / "apps" / "echo.py"

COMMON = """
type: fleet
name: local
backends: [local]
nodes: 1
resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
---
type: gateway
name: local
backend: local
default: true
certificate: null
"""

SERVICE = """
---
type: service
name: {name}
port: 8000
model: {model}
commands: ["python3 {echo}"]
resources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}
probes: [{{url: /health, timeout: 5, interval: 1}}]
"""

ROUTER = """
---
type: router
name: chat
model: chat
strategy: priority
members:
{members}
retries: 2
cooldown: 5
"""


def _write(root: Path, services: list[str]) -> None:
    text = COMMON
    for name in services:
        text += SERVICE.format(name=name, model=f"{name}-model", echo=ECHO)
    members = "\n".join(f"  - {{service: {name}, priority: {i}}}" for i, name in enumerate(services))
    text += ROUTER.format(members=members)
    (root / "stack.gpustack.yml").write_text(text)


@pytest.fixture
def router_project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "proj"
    (root / "cfg").mkdir(parents=True)
    project = Project(root=root, config=root / "cfg")
    try:
        yield project
    finally:
        try:
            project.cli("destroy", "--yes", check=False, timeout=120)
        finally:
            kill_all(processes_under(root))


def _chat(gateway: str, token: str, model: str) -> tuple[int, dict[str, object]]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, raw = http("POST", gateway + "/v1/chat/completions", token, body)
    return status, json.loads(raw) if raw else {}


def test_router_alias_serves_by_priority_and_shifts_when_a_member_is_removed(router_project: Project) -> None:
    _write(router_project.config, ["large", "small"])
    router_project.cli("up", "cfg", "--yes")
    outputs = router_project.outputs()
    gateway, token = outputs["gateway_url"], outputs["token"]

    # The alias goes to the first member by priority; each service's own model name still works.
    for _ in range(5):
        status, body = _chat(gateway, token, "chat")
        assert status == 200 and body["service"] == "large", body
    assert _chat(gateway, token, "small-model")[1]["service"] == "small"
    assert _chat(gateway, token, "chat")[0] == 200
    status_text = router_project.cli("status").stdout
    assert "Routers" in status_text and "large" in status_text and "small" in status_text

    # Remove `large` from the configuration under a steady load on the alias: the router is updated
    # before the service is deleted, so no request fails and all traffic ends up on `small`.
    _write(router_project.config, ["small"])
    body = json.dumps({"model": "chat", "messages": []}).encode()
    load = LoadGenerator(gateway + "/v1/chat/completions", token, rate=20, duration=60, max_requests=1200,
                         method="POST", body=body).start()
    try:
        wait_until(lambda: load.answered() >= 10, 60, what="the load answered before the change")
        plan = router_project.cli("plan", "cfg").stdout
        assert "large" in plan and "removed" in plan, plan
        router_project.cli("up", "cfg", "--yes")
        after_up = load.elapsed()
        wait_until(lambda: load.answered(after_up + 0.5) >= 20, 60, what="the load answered after up")
    finally:
        result = load.stop()
    assert len(result.outcomes) >= 30
    assert result.failures == [], result.failures[:3]
    late = [json.loads(o.body)["service"] for o in result.outcomes if o.at > after_up + 0.5]
    assert late and set(late) == {"small"}, set(late)
