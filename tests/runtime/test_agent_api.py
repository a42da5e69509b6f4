"""Agent API against a real agent process: auth, host facts, replica lifecycle, validation."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import AgentProcess, app_command, http_get, http_json, replica_processes, wait_until
from gpustack_iac.errors import AgentApiError, RuntimeApiError
from gpustack_iac.runtime.agent.hostinfo import detect_docker, detect_gpus
from gpustack_iac.runtime.client import AgentClient


@pytest.fixture
def agent(shared_agent: AgentProcess) -> AgentProcess:
    """These tests use distinct replica ids, so one agent serves the whole module."""
    return shared_agent


def echo_spec(replica_id: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": replica_id,
        "service": "svc",
        "group": "g1",
        "commands": [app_command("echo.py")],
        "env": {"GREETING": "hello"},
        "labels": {"team": "ml"},
    }
    spec.update(overrides)
    return spec


def running(agent: AgentProcess, replica_id: str) -> dict[str, Any] | None:
    replica = agent.call(lambda c: c.get(replica_id))
    if replica and replica["state"] == "running":
        status, _ = http_get(replica["url"] + "/health")
        return replica if status == 200 else None
    return None


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR as servers set it: connections in TIME_WAIT do not count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("path", ["/v1/health", "/v1/host", "/v1/replicas", "/v1/replicas/x", "/v1/replicas/x/logs"])
def test_every_endpoint_needs_the_token(agent: AgentProcess, path: str) -> None:
    for token in (None, "wrong-token", agent.token + "x"):
        status, body = http_get(agent.url + path, token)
        assert status == 401
        assert json.loads(body)["error"]["code"] == "unauthorized"
    status, body = http_get(agent.url + "/v1/health", agent.token)
    assert status == 200 and json.loads(body)["ok"] is True


def test_unauthenticated_post_and_delete_are_refused(agent: AgentProcess) -> None:
    with pytest.raises(AgentApiError) as exc:
        agent.call(lambda c: c.start(echo_spec("r-noauth")), token="nope")
    assert exc.value.status == 401
    with pytest.raises(AgentApiError) as exc:
        agent.call(lambda c: c.stop("r-noauth"), token="nope")
    assert exc.value.status == 401
    assert "r-noauth" not in [r["id"] for r in agent.call(lambda c: c.list())]
    # The token never reaches the agent's log.
    assert agent.token not in agent.log_file.read_text()


def test_host_facts(agent: AgentProcess) -> None:
    host = agent.call(lambda c: c.host())
    assert host["name"] == "test-host"
    assert host["cpus"] >= 1
    assert host["memory_bytes"] > 100 * 1024 * 1024
    assert 0 < host["memory_available_bytes"] <= host["memory_bytes"]
    assert host["disk_bytes"] > 0 and 0 <= host["disk_free_bytes"] <= host["disk_bytes"]
    # Whatever nvidia-smi says on this machine (an empty list without it), and Docker only with a daemon.
    assert host["gpus"] == [
        {"index": g.index, "name": g.name, "vendor": g.vendor, "memory_bytes": g.memory_bytes} for g in detect_gpus()
    ]
    assert host["docker"] is detect_docker()


def test_start_list_get_logs_stop(agent: AgentProcess) -> None:
    created = agent.call(lambda c: c.start(echo_spec("r1")))
    assert created["id"] == "r1" and created["service"] == "svc" and created["group"] == "g1"
    assert created["labels"] == {"team": "ml"}
    assert created["url"] == f"http://127.0.0.1:{created['port']}"
    assert created["pid"] > 0 and created["restarts"] == 0

    replica = wait_until(lambda: running(agent, "r1"), what="replica r1 serving")
    answer = http_json(replica["url"] + "/hello?x=1")
    assert answer["replica"] == "r1" and answer["service"] == "svc" and answer["group"] == "g1"
    assert answer["port"] == replica["port"] and answer["greeting"] == "hello"
    assert answer["path"] == "/hello?x=1"

    assert [r["id"] for r in agent.call(lambda c: c.list())] == ["r1"]
    assert (agent.state_dir / "replicas" / "r1.json").exists()
    logs = wait_until(lambda: (text := agent.call(lambda c: c.logs("r1", tail=50))) and "GET /hello" in text and text,
                      what="request in the log")
    assert f"echo listening on 127.0.0.1:{replica['port']}" in logs
    assert agent.call(lambda c: c.logs("r1", tail=1)).count("\n") <= 1

    pids = [p.pid for p in replica_processes("r1", agent.state_dir)]
    assert replica["pid"] in pids
    stopped = agent.call(lambda c: c.stop("r1", grace=5))
    assert stopped["state"] == "stopped" and stopped["id"] == "r1"
    assert replica_processes("r1", agent.state_dir) == []
    assert wait_until(lambda: port_free(replica["port"]), what="replica port released")
    assert agent.call(lambda c: c.get("r1")) is None
    assert agent.call(lambda c: c.stop("r1")) is None
    assert not (agent.state_dir / "replicas" / "r1.json").exists()


def test_logs_follow_streams_new_output(agent: AgentProcess) -> None:
    agent.call(lambda c: c.start(echo_spec("rf")))
    replica = wait_until(lambda: running(agent, "rf"), what="replica rf serving")

    async def follow(client: Any) -> str:
        seen = b""
        http_get(replica["url"] + "/first-marker")
        async for chunk in client.follow_logs("rf", tail=0):
            seen += chunk
            if b"/first-marker" in seen and b"/second-marker" not in seen:
                # Written after following began: must arrive through the open stream.
                await asyncio.to_thread(http_get, replica["url"] + "/second-marker")
            if b"/second-marker" in seen:
                return seen.decode()
        return seen.decode()

    text = agent.call(lambda c: asyncio.wait_for(follow(c), 30))
    assert "/first-marker" in text and "/second-marker" in text


def test_same_id_same_spec_is_idempotent_and_different_spec_conflicts(agent: AgentProcess) -> None:
    first = agent.call(lambda c: c.start(echo_spec("r2")))
    again = agent.call(lambda c: c.start(echo_spec("r2")))
    assert again["pid"] == first["pid"] and again["port"] == first["port"]
    wait_until(lambda: running(agent, "r2"), what="replica r2 serving")
    assert len(replica_processes("r2", agent.state_dir, app="echo.py")) == 1
    with pytest.raises(AgentApiError) as exc:
        agent.call(lambda c: c.start(echo_spec("r2", env={"GREETING": "changed"})))
    assert exc.value.status == 409 and exc.value.code == "replica_conflict"
    assert agent.call(lambda c: c.get("r2"))["pid"] == first["pid"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"image": "python:3.11-slim"}, "Docker"),
        ({"gpus": [7]}, "gpus"),
        ({"id": "../escape"}, "id"),
        ({"commands": []}, "commands"),
        ({"commands": "echo hi"}, "commands"),
        ({"env": {"BAD-NAME": "x"}}, "env"),
        ({"working_dir": "/does/not/exist"}, "working_dir"),
    ],
)
def test_invalid_specs_are_rejected_with_422(agent: AgentProcess, overrides: dict[str, Any], fragment: str) -> None:
    if overrides.get("image") and detect_docker():
        pytest.skip("a Docker daemon runs here, so an image is accepted")
    with pytest.raises(AgentApiError) as exc:
        agent.call(lambda c: c.start(echo_spec("bad", **overrides)))
    assert exc.value.status == 422 and exc.value.code == "invalid_spec"
    assert fragment in str(exc.value)
    assert "bad" not in [r["id"] for r in agent.call(lambda c: c.list())]


def test_not_json_is_400_and_unknown_replica_is_404(agent: AgentProcess) -> None:
    request = urllib.request.Request(
        agent.url + "/v1/replicas", data=b"{nope", method="POST",
        headers={"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and json.loads(exc.read())["error"]["code"] == "bad_request"
    status, body = http_get(agent.url + "/v1/replicas/missing", agent.token)
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_replica"


def test_client_reports_an_unreachable_agent(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused

        async def call() -> None:
            async with AgentClient(f"http://127.0.0.1:{port}", "secret-token", timeout=5) as client:
                await client.health()

        with pytest.raises(RuntimeApiError) as exc:
            asyncio.run(call())
    assert "secret-token" not in str(exc.value)
