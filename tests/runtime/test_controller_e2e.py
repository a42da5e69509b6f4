"""The controller end to end: the real gateway process, real agents, real replica processes.

Covers issue 4 item 3 and issue 5 items 2, 3, 4, 5 and 6 on loopback: placement on matching agents
only, routing of ready replicas, replacement after kill -9 of a replica under load, an agent kill -9
and a gateway restart that keep the same replicas serving, recovery after a gateway crash, a rolling
update under load, a broken version that leaves the old one serving, scale from zero, spill-over,
in-place changes, and a router alias failing over between services.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

import psutil
from conftest import agent, agent_factory, app_command, wait_until  # noqa: F401 - fixtures
from controller_fixtures import (  # noqa: F401 - fixtures
    AgentFactory,
    GatewayProcess,
    Load,
    echo_group,
    gateway_process,
    ready_replicas,
    service_def,
    wait_ready,
)

from gpustack_iac.runtime import procs

GiB = 2**30


def test_control_api_places_groups_on_matching_agents_and_routes_them(gateway_process: GatewayProcess, agent_factory: AgentFactory) -> None:
    gw = gateway_process
    assert gw.control("GET", "/control/health", token=None)[0] == 401
    assert gw.control("GET", "/control/services", token=gw.token)[0] == 401  # the service token is not enough
    assert gw.control("GET", "/control/health") == (200, {"ok": True})
    status, body = gw.control("PUT", "/control/services/bad", {"name": "bad", "generation": "x", "groups": []})
    assert status == 422 and "at least one replica group" in body["error"]["message"]
    assert gw.control("GET", "/control/services/nope")[0] == 404
    assert gw.admin_token not in gw.log_file.read_text()

    east, west = agent_factory(), agent_factory()
    gw.register_agent("east", east, {"backend": "local", "region": "east"})
    gw.register_agent("west", west, {"backend": "local", "region": "west"})
    status, agents = gw.control("GET", "/control/agents")
    assert status == 200 and {a["name"] for a in agents} == {"east", "west"}
    assert all(a["healthy"] and a["host"]["cpus"] >= 1 for a in agents)
    assert east.token not in json.dumps(agents) and west.token not in json.dumps(agents)

    definition = service_def(
        "web",
        echo_group("base", "b1", replicas=2, placement={"regions": ["east"]}),
        echo_group("overflow", "o1", replicas=1, placement={"regions": ["west"]}),
        echo_group(
            "h100", "h1", replicas=1,
            resources={"cpu": {"min": 1}, "gpu": {"vendor": "nvidia", "names": ["H100"], "count": {"min": 1}, "memory_bytes": {"min": 80 * GiB}}},
        ),
    )
    answer = gw.put_service(definition)
    assert answer["endpoint"] == f"{gw.url}/services/web"
    s = wait_ready(gw, "web", {"base": 2, "overflow": 1})
    groups = {g["name"]: g for g in s["groups"]}
    assert {r["agent"] for r in groups["base"]["replicas"]} == {"east"}
    assert {r["agent"] for r in groups["overflow"]["replicas"]} == {"west"}
    # No agent has an H100: no replica, and the status says why for each agent.
    assert groups["h100"]["replicas"] == [] and groups["h100"]["ready"] == 0
    msg = groups["h100"]["message"] or ""
    assert "no capacity" in msg and "east: needs GPU H100" in msg and "west:" in msg

    # Requests through the gateway reach both groups; without the token they get 401.
    seen: set[str] = set()

    def both_groups() -> bool:
        status, body = gw.get("/services/web/hello")
        assert status == 200, body
        seen.add(json.loads(body)["group"])
        return seen == {"base", "overflow"}

    wait_until(both_groups, timeout=30, interval=0.01, what="answers from both groups")
    assert gw.get("/services/web/hello", token=None)[0] == 401

    # Logs are gathered from the agents.
    status, text = gw.control("GET", "/control/services/web/logs?group=base&tail=50")
    assert status == 200 and "echo listening" in text and "==> web-base-" in text
    # Following streams the same lines (prefixed by replica) and keeps the stream open.
    follow = urllib.request.Request(
        f"{gw.control_url}/control/services/web/logs?group=overflow&follow=1&tail=5",
        headers={"Authorization": f"Bearer {gw.admin_token}"},
    )
    with urllib.request.urlopen(follow, timeout=15) as stream:
        assert b"echo listening" in stream.readline()
        # New lines arrive while we follow: send requests until one reaches the overflow replica.
        wait_until(lambda: json.loads(gw.get("/services/web/followed")[1])["group"] == "overflow", timeout=20)
        for _ in range(200):  # bounded; each readline is bounded by the timeout above
            if b"/followed" in stream.readline():
                break
        else:
            raise AssertionError("the followed request never showed up in the log stream")

    # Deleting the service stops every replica it had.
    pids = [r["pid"] for g in s["groups"] for r in g["replicas"]]
    assert gw.control("DELETE", "/control/services/web")[0] == 200
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids),
               timeout=30, what="replicas stopped")
    assert gw.get("/services/web/hello")[0] == 404
    log = gw.log_file.read_text()
    assert east.token not in log and gw.token not in log and gw.admin_token not in log


def test_replica_agent_and_gateway_failures_keep_the_service(
    gateway_process: GatewayProcess, agent: Any
) -> None:
    gw = gateway_process
    gw.register_agent("local", agent)
    gw.put_service(service_def("api", echo_group("main", "m1", replicas=2)))
    before = wait_ready(gw, "api", {"main": 2})
    victim = before["groups"][0]["replicas"][0]

    with Load(gw, "/services/api/ping") as load:
        load.wait_more(20)
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced() -> bool:
            ready = ready_replicas(gw, "api")
            return len(ready) == 2 and victim["id"] not in ready

        wait_until(replaced, timeout=60, interval=0.2, what="a replacement replica")
        load.wait_more(20)
    assert load.failures == [], load.failures[:5]
    assert load.ok >= 40
    # The gateway's log tells each replica's way, one line per change (where a rollout that never
    # finishes is read from).
    log = gw.log_file.read_text()
    for step in ("started on local", "ready", "stopping"):
        assert f"replica {victim['id']}: {step}" in log, log[-3000:]

    # kill -9 of the agent: its replicas keep serving; the restarted agent re-adopts them (same pids).
    before = {rid: r["pid"] for rid, r in ready_replicas(gw, "api").items()}
    with Load(gw, "/services/api/x") as load:
        load.wait_more(10)
        agent.kill9()
        wait_until(lambda: not gw.control("GET", "/control/agents")[1][0]["healthy"], timeout=20, what="agent seen down")
        load.wait_more(20)
        agent.restart()
        wait_until(lambda: gw.control("GET", "/control/agents")[1][0]["healthy"], timeout=30, what="agent seen up")
        load.wait_more(10)
    assert load.failures == [], load.failures[:5]
    after_agent = wait_ready(gw, "api", {"main": 2})
    assert {r["id"]: r["pid"] for r in after_agent["groups"][0]["replicas"]} == before

    # Restart of the gateway process: the registrations survive and the same processes serve.
    serving = ready_replicas(gw, "api")
    gw.terminate()
    assert all(psutil.pid_exists(r["pid"]) for r in serving.values())
    gw.start()
    # The first tick ran before the ports opened: the first request is served at once.
    status, body = gw.get("/services/api/ping")
    assert status == 200 and json.loads(body)["replica"] in serving
    after = wait_ready(gw, "api", {"main": 2})
    assert {r["id"]: r["pid"] for r in after["groups"][0]["replicas"]} == {rid: r["pid"] for rid, r in serving.items()}

    # A crash, not a shutdown: the gateway and every replica die by SIGKILL while the controller
    # is down. The restarted controller finds the recorded replicas gone and replaces them.
    endpoint = gw.service("api")["endpoint"]
    os.kill(gw.pid, signal.SIGKILL)
    for r in serving.values():
        os.kill(r["pid"], signal.SIGKILL)
    assert procs.wait_gone(gw.pid, gw.create_time, 10)
    gw.start()
    dead = {r["pid"] for r in serving.values()}

    def recovered() -> bool:
        replicas = gw.service("api")["groups"][0]["replicas"]
        return len(replicas) == 2 and all(r["ready"] for r in replicas) and not {r["pid"] for r in replicas} & dead

    wait_until(recovered, timeout=60, interval=0.2, what="two new replicas")
    assert gw.service("api")["endpoint"] == endpoint
    status, body = gw.get("/services/api/again")
    assert status == 200, body


def test_rolling_update_under_load_then_broken_version_keeps_old_serving(gateway_process: GatewayProcess, agent: Any) -> None:
    gw = gateway_process
    gw.register_agent("local", agent)
    gw.put_service(service_def("chat", echo_group("main", "v1", replicas=2, greeting="v1")))
    wait_ready(gw, "chat", {"main": 2})

    with Load(gw, "/services/chat/hi") as load:
        load.wait_more(10)
        gw.put_service(service_def("chat", echo_group("main", "v2", replicas=2, greeting="v2"), generation="s2"))

        def updated() -> bool:
            s = gw.service("chat")
            g = s["groups"][0]
            return (
                s["rollout"] is not None and s["rollout"]["state"] == "done"
                and len(g["replicas"]) == 2 and all(r["generation"] == "v2" and r["ready"] for r in g["replicas"])
            )

        wait_until(updated, timeout=90, interval=0.2, what="rolling update to v2")
        load.wait_more(10)
    assert load.failures == [], load.failures[:5]
    greetings = [a["greeting"] for a in load.answers]
    assert greetings[0] == "v1" and greetings[-1] == "v2"
    # Traffic moved over: once v2 answered, v1 may still finish a few requests while draining, never after the end.
    assert greetings.count("v2") >= 10

    v2 = ready_replicas(gw, "chat")
    broken = echo_group("main", "v3", replicas=2, greeting="v3")
    broken["commands"] = [app_command("crasher.py")]
    with Load(gw, "/services/chat/hi") as load:
        load.wait_more(5)
        gw.put_service(service_def("chat", broken, generation="s3"))

        def failed() -> dict[str, Any] | None:
            s = gw.service("chat")
            return s if s["rollout"] and s["rollout"]["state"] == "failed" else None

        s = wait_until(failed, timeout=60, interval=0.2, what="the rollout of the broken version to fail")
        load.wait_more(10)
    assert load.failures == [], load.failures[:5]
    assert {a["greeting"] for a in load.answers} == {"v2"}
    report = s["rollout"]["groups"][0]
    assert report["to_generation"] == "v3" and "keeps serving" in report["message"]
    # The old replicas (same processes) still serve, and no v3 replica is left behind.
    wait_until(lambda: set(ready_replicas(gw, "chat")) == set(v2) and len(gw.service("chat")["groups"][0]["replicas"]) == 2,
               timeout=30, what="only the v2 replicas left")
    assert {r["pid"] for r in ready_replicas(gw, "chat").values()} == {r["pid"] for r in v2.values()}


def test_scaling_decisions_reach_the_agents(gateway_process: GatewayProcess, agent: Any) -> None:
    """Scale from zero, spill-over from a group without capacity, in-place changes, a crash loop."""
    gw = gateway_process
    gw.register_agent("local", agent)
    group = echo_group("main", "z1")
    group["replicas"] = {"min": 0, "max": 2}
    group["scaling"] = {"metric": "rps", "target": 50, "scale_up_delay": 0, "scale_down_delay": 600}
    gw.put_service(service_def("lazy", group))
    # Nothing runs until a request arrives.
    wait_until(lambda: gw.service("lazy")["groups"][0]["desired"] == 0, timeout=10, what="desired 0")
    assert gw.service("lazy")["groups"][0]["replicas"] == []
    # The gateway holds the request while the controller starts a replica; then it is served.
    status, body = gw.get("/services/lazy/first")
    assert status == 200, body
    assert json.loads(body)["group"] == "main"
    assert ready_replicas(gw, "lazy")

    base = echo_group(
        "h100", "p1", replicas=1,
        resources={"cpu": {"min": 1}, "gpu": {"names": ["H100"], "count": {"min": 1}, "memory_bytes": {"min": 0}}},
    )
    overflow = echo_group("cpu", "p2")
    overflow["replicas"] = {"min": 0, "max": 2}
    definition = service_def("spill", base, overflow)
    definition["scaling"] = {"metric": "rps", "target": 100, "scale_up_delay": 0, "scale_down_delay": 600}
    gw.put_service(definition)
    # The base group has no host with an H100: its replica goes to the overflow group instead.
    s = wait_ready(gw, "spill", {"h100": 0, "cpu": 1})
    groups = {g["name"]: g for g in s["groups"]}
    assert "no capacity" in (groups["h100"]["message"] or "")
    status, body = gw.get("/services/spill/x")
    assert status == 200 and json.loads(body)["group"] == "cpu"

    gw.put_service(service_def("grow", echo_group("main", "c1", replicas=1)))
    [first] = wait_ready(gw, "grow", {"main": 1})["groups"][0]["replicas"]
    # Same group generation, new count: no restart, one more replica.
    gw.put_service(service_def("grow", echo_group("main", "c1", replicas=2), generation="s2"))
    after = wait_ready(gw, "grow", {"main": 2})["groups"][0]["replicas"]
    assert {"id": first["id"], "pid": first["pid"]} in [{"id": r["id"], "pid": r["pid"]} for r in after]
    assert after[0]["restarts"] == 0 and gw.service("grow")["rollout"] is None

    # A range change is in place too: the autoscaler is reconfigured, the running replica stays.
    lazy = ready_replicas(gw, "lazy")
    group["replicas"] = {"min": 1, "max": 3}
    gw.put_service(service_def("lazy", group, generation="s2"))
    wait_until(lambda: gw.service("lazy")["groups"][0]["max"] == 3, timeout=10, what="the new range")
    assert {r["pid"] for r in ready_replicas(gw, "lazy").values()} == {r["pid"] for r in lazy.values()}


def test_router_alias_fails_over_to_the_next_service(gateway_process: GatewayProcess, agent: Any) -> None:
    gw = gateway_process
    gw.register_agent("local", agent)
    for name in ("alpha", "beta"):
        definition = service_def(name, echo_group("main", f"{name}1"))
        definition["model"] = {"name": f"m-{name}", "format": "openai", "prefix": "/v1"}
        gw.put_service(definition)
    status, body = gw.control("PUT", "/control/routers/llm", {
        "strategy": "priority",
        "members": [{"service": "alpha", "priority": 0}, {"service": "beta", "priority": 1}],
        "retries": 1, "cooldown_failures": 1, "cooldown_seconds": 30,
    })
    assert status == 200, body
    status, body = gw.control("PUT", "/control/routers/bad", {"strategy": "random", "members": [{"service": "alpha"}]})
    assert status == 422 and "strategy" in body["error"]["message"]
    wait_ready(gw, "alpha", {"main": 1})
    wait_ready(gw, "beta", {"main": 1})

    request = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}
    with Load(gw, "/v1/chat/completions", body=request) as load:
        load.wait_more(10)
        assert gw.control("DELETE", "/control/services/alpha")[0] == 200
        deleted_at = time.monotonic()
        load.wait_more(20)
    assert load.failures == [], load.failures[:5]
    served = [a["service"] for a in load.answers]
    assert served[0] == "alpha" and served[-1] == "beta"
    # Every request sent after alpha was gone went to beta.
    assert {a["service"] for a in load.answers if a["_started"] > deleted_at} == {"beta"}

    status, router = gw.control("GET", "/control/routers/llm")
    assert status == 200 and router["strategy"] == "priority"
    members = {m["service"]: m for m in router["members"]}
    assert members["alpha"]["requests"] >= 10 and members["beta"]["requests"] >= 20
    assert not members["alpha"]["registered"] and members["beta"]["ready"] == 1
    # Registrations survive a restart of the gateway process.
    gw.terminate()
    gw.start()
    assert gw.control("GET", "/control/routers/llm")[0] == 200
    status, body = gw.post("/v1/chat/completions", request)
    assert status == 200 and json.loads(body)["service"] == "beta"

    # A first deployment that crashes at once: replaced with growing back-off, and status says why.
    crashing = echo_group("main", "x1")
    crashing["commands"] = [app_command("crasher.py")]
    gw.put_service(service_def("broken", crashing))

    def crash_reported() -> str | None:
        msg = gw.service("broken")["groups"][0]["message"] or ""
        return msg if "exit code 3" in msg and "replacing it in" in msg else None

    wait_until(crash_reported, timeout=30, interval=0.2, what="the crash in status")


def test_load_scales_the_overflow_group_up_and_back(gateway_process: GatewayProcess, agent: Any) -> None:
    """Base/overflow (issue 5): one base replica always on; load above its target adds overflow
    replicas; when the load stops they go away again after the scale-down delay."""
    gw = gateway_process
    gw.register_agent("local", agent)
    overflow = echo_group("overflow", "f1")
    overflow["replicas"] = {"min": 0, "max": 2}
    definition = service_def("elastic", echo_group("base", "b1"), overflow)
    definition["scaling"] = {"metric": "rps", "target": 5, "scale_up_delay": 0, "scale_down_delay": 2}
    gw.put_service(definition)
    wait_ready(gw, "elastic", {"base": 1, "overflow": 0})

    def overflow_ready() -> int:
        return next(g["ready"] for g in gw.service("elastic")["groups"] if g["name"] == "overflow")

    with Load(gw, "/services/elastic/work", workers=2, pause=0.02) as load:
        wait_until(lambda: overflow_ready() >= 1, timeout=30, interval=0.2, what="overflow replicas under load")
        load.wait_more(10)
    assert load.failures == [], load.failures[:5]
    # No traffic: the overflow group scales back to zero; the base replica stays.
    wait_ready(gw, "elastic", {"base": 1, "overflow": 0}, timeout=40)
