"""A restarted agent re-adopts live replicas (no duplicates) and restarts the dead ones."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import psutil

from conftest import AgentProcess, app_command, http_get, http_json, replica_processes, wait_until
from gpustack_iac.runtime.agent.offline import stop_all_replicas


def spec(replica_id: str) -> dict[str, Any]:
    return {"id": replica_id, "service": "svc", "group": "g", "commands": [app_command("echo.py")]}


def serving(url: str) -> bool:
    return http_get(url + "/health", timeout=5)[0] == 200


def start_two(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    """Two serving replicas, as the agent reports them once they serve: a replica may have been
    restarted before it served (on a busy machine another process can take the free port the agent
    picked before the replica binds it), so its pid and restart count are read after, not at start."""
    started = {rid: agent.call(lambda c, rid=rid: c.start(spec(rid))) for rid in ("a", "b")}
    for replica in started.values():
        wait_until(lambda replica=replica: serving(replica["url"]), what=f"replica {replica['id']} serving")
    return {rid: agent.call(lambda c, rid=rid: c.get(rid)) for rid in started}


def test_kill9_agent_replicas_keep_serving_and_are_readopted(agent: AgentProcess) -> None:
    replicas = start_two(agent)
    pythons = {rid: replica_processes(rid, agent.state_dir, app="echo.py") for rid in replicas}
    assert all(len(p) == 1 for p in pythons.values())

    agent.kill9()
    # Nobody supervises them now, yet they serve.
    for replica in replicas.values():
        assert http_json(replica["url"] + "/ping")["replica"] == replica["id"]

    agent.restart()
    listed = {r["id"]: r for r in agent.call(lambda c: c.list())}
    assert set(listed) == {"a", "b"}
    for rid, replica in replicas.items():
        assert listed[rid]["pid"] == replica["pid"] and listed[rid]["port"] == replica["port"]
        assert listed[rid]["restarts"] == replica["restarts"]
        # Exactly the same process, not a second copy.
        assert [p.pid for p in replica_processes(rid, agent.state_dir, app="echo.py")] == [pythons[rid][0].pid]
        assert serving(replica["url"])
    assert "re-adopted pid" in agent.call(lambda c: c.logs("a", tail=5))

    # The adopted replica is still supervised: killing it brings a replacement on the same port.
    os.killpg(replicas["a"]["pid"], signal.SIGKILL)
    again = wait_until(
        lambda: (r := agent.call(lambda c: c.get("a"))) and r["restarts"] == replicas["a"]["restarts"] + 1 and r["pid"] and r,
        what="adopted replica restarted"
    )
    assert again["pid"] != replicas["a"]["pid"] and again["port"] == replicas["a"]["port"]
    wait_until(lambda: serving(replicas["a"]["url"]), what="replacement serving")
    assert len(replica_processes("a", agent.state_dir, app="echo.py")) == 1

    # And stop works on a replica the current agent never started.
    stopped = agent.call(lambda c: c.stop("b", grace=5))
    assert stopped["state"] == "stopped"
    assert replica_processes("b", agent.state_dir) == []
    assert [r["id"] for r in agent.call(lambda c: c.list())] == ["a"]


def test_replica_that_died_while_the_agent_was_down_is_started_again(agent: AgentProcess) -> None:
    replicas = start_two(agent)
    agent.kill9()
    os.killpg(replicas["a"]["pid"], signal.SIGKILL)
    assert psutil.wait_procs([psutil.Process(p.pid) for p in replica_processes("a", agent.state_dir)], timeout=10)
    agent.restart()
    a = agent.call(lambda c: c.get("a"))
    assert a is not None and a["restarts"] == replicas["a"]["restarts"] + 1 and a["pid"] != replicas["a"]["pid"]
    wait_until(lambda: serving(replicas["a"]["url"]), what="replica a serving again")
    b = agent.call(lambda c: c.get("b"))
    assert b is not None and b["pid"] == replicas["b"]["pid"] and b["restarts"] == replicas["b"]["restarts"]
    for rid in ("a", "b"):
        assert len(replica_processes(rid, agent.state_dir, app="echo.py")) == 1


def test_sigterm_leaves_replicas_running_for_the_next_agent(agent: AgentProcess) -> None:
    replicas = start_two(agent)
    agent.terminate()
    assert "shutting down" in agent.log_file.read_text()
    for replica in replicas.values():
        assert serving(replica["url"])
    agent.restart()
    for rid, replica in replicas.items():
        got = agent.call(lambda c, rid=rid: c.get(rid))
        assert got is not None and got["pid"] == replica["pid"]
        assert len(replica_processes(rid, agent.state_dir, app="echo.py")) == 1


def test_orphan_without_a_recorded_pid_is_not_duplicated(agent: AgentProcess) -> None:
    """The agent died between spawning a replica and recording its pid: the next agent must not
    leave that process running beside the one it starts."""
    replicas = start_two(agent)
    agent.kill9()
    record_file = agent.state_dir / "replicas" / "a.json"
    record = json.loads(record_file.read_text())
    record["pid"] = None
    record["create_time"] = None
    record_file.write_text(json.dumps(record))
    old = replicas["a"]["pid"]
    agent.restart()
    a = wait_until(lambda: (r := agent.call(lambda c: c.get("a"))) and r["pid"] and r, what="replica a restarted")
    assert a["pid"] != old
    assert wait_until(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE,
                      what="the unrecorded orphan to be killed")
    wait_until(lambda: serving(replicas["a"]["url"]), what="replica a serving again")
    assert len(replica_processes("a", agent.state_dir, app="echo.py")) == 1


def test_offline_cleanup_stops_every_recorded_replica(agent: AgentProcess) -> None:
    start_two(agent)
    agent.terminate()  # SIGTERM leaves the replicas running by design
    assert all(len(replica_processes(rid, agent.state_dir)) > 0 for rid in ("a", "b"))
    assert sorted(stop_all_replicas(agent.state_dir, grace=5)) == ["a", "b"]
    assert replica_processes("a", agent.state_dir) == [] and replica_processes("b", agent.state_dir) == []
    assert list((agent.state_dir / "replicas").glob("*.json")) == []
