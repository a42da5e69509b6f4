"""Pure parts of the controller: definition parsing, placement, rollout decisions, the store."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from gpustack_iac.runtime.controller.model import ServiceDefinitionError, parse_service
from gpustack_iac.runtime.controller.placement import AgentView, Assignment, HostFacts, NoCapacity, Reservation, place
from gpustack_iac.runtime.controller.rollout import ReplicaView, plan_group
from gpustack_iac.runtime.controller.store import AgentRecord, PlacementRecord, ServiceRecord, Store
from tests.support.ports import closed_port

GiB = 2**30


def group(name: str, gen: str = "g1", replicas: tuple[int, int] = (1, 1), gpu: dict[str, Any] | None = None,
          placement: dict[str, Any] | None = None, memory: float = 0) -> dict[str, Any]:
    return {
        "name": name,
        "generation": gen,
        "replicas": {"min": replicas[0], "max": replicas[1]},
        "commands": ["python3 -m http.server $PORT"],
        "resources": {"cpu": {"min": 1}, "memory_bytes": {"min": memory}, "gpu": gpu},
        "placement": placement or {},
    }


def service(*groups: dict[str, Any], scaling: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "llm", "generation": "s1", "groups": list(groups), "scaling": scaling}


def host(name: str, gpus: list[tuple[str, int]] = (), cpus: int = 8, memory: int = 64 * GiB) -> HostFacts:
    return HostFacts.from_json(
        {
            "name": name,
            "cpus": cpus,
            "memory_bytes": memory,
            "disk_bytes": 500 * GiB,
            "gpus": [{"index": i, "name": n, "vendor": "nvidia", "memory_bytes": m * GiB} for i, (n, m) in enumerate(gpus)],
        }
    )


# ------------------------------------------------------------------------------------ model
def test_parse_service_roundtrips_and_keeps_groups_in_order() -> None:
    s = parse_service(service(group("base"), group("overflow", replicas=(0, 5)), scaling={"metric": "rps", "target": 5}))
    assert [g.name for g in s.groups] == ["base", "overflow"]
    assert s.groups[1].replicas.max == 5 and not s.groups[1].replicas.fixed
    assert parse_service(s.to_json()) == s


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (service(group("a"), group("a")), "duplicate group name"),
        (service(group("a", replicas=(0, 3))), "needs scaling"),
        (service(group("a", replicas=(3, 1))), "min <= max"),
        ({"name": "x", "generation": "g", "groups": [{"name": "a"}]}, "groups.0.generation"),
        (service(group("a", replicas=(0, 3)), scaling={"metric": "rps", "target": 5, "schedule": [{"cron": "often", "min": 1}]}),
         "scaling.schedule.0: scaling.schedule: 'often' is not a 5-field cron expression"),
        (service(group("a", replicas=(0, 3)), scaling={"metric": "tokens", "target": 5}), "scaling.metric: expected one of"),
    ],
)
def test_parse_service_rejects_bad_definitions_with_the_property(bad: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ServiceDefinitionError, match=fragment):
        parse_service(bad)


# -------------------------------------------------------------------------------- placement
def test_gpu_group_goes_only_to_the_host_with_matching_gpus() -> None:
    g = parse_service(service(group("h100", gpu={"names": ["H100"], "count": {"min": 1}, "memory_bytes": {"min": 40 * GiB}}))).groups[0]
    agents = [AgentView("cpu-box", host("cpu-box")), AgentView("gpu-box", host("gpu-box", [("NVIDIA H100 80GB HBM3", 80)] * 2))]
    got = place(g, agents, {})
    assert isinstance(got, Assignment) and got.agent == "gpu-box" and got.reservation.gpus == (0,)
    # GPUs are exclusive: the second replica gets the other card, a third finds none free.
    second = place(g, agents, {"gpu-box": [got.reservation]})
    assert isinstance(second, Assignment) and second.reservation.gpus == (1,)
    third = place(g, agents, {"gpu-box": [got.reservation, second.reservation]})
    assert isinstance(third, NoCapacity)
    assert "0 free of 2" in third.message() and "cpu-box" in third.message()


def test_gpu_name_and_memory_mismatch_says_why() -> None:
    g = parse_service(service(group("a100", gpu={"names": ["A100"], "count": {"min": 2}, "memory_bytes": {"min": 80 * GiB}}))).groups[0]
    agents = [AgentView("box", host("box", [("NVIDIA A100-SXM4-40GB", 40)] * 4)), AgentView("a10", host("a10", [("NVIDIA A10", 24)]))]
    got = place(g, agents, {})
    assert isinstance(got, NoCapacity)
    msg = got.message()
    assert "box: needs GPU A100:2" in msg and "A100-SXM4-40GB 40.0GiB" in msg and "a10:" in msg


def test_gpu_memory_matches_the_marketed_size_drivers_underreport() -> None:
    # "A10G:24GB" as the spec says it; nvidia-smi reports 23028 MiB for that card.
    g = parse_service(service(group("a10g", gpu={"names": ["A10G"], "count": {"min": 1},
                                                  "memory_bytes": {"min": 24 * GiB, "max": 24 * GiB}}))).groups[0]
    a10g = HostFacts.from_json({"name": "a", "cpus": 8, "memory_bytes": 64 * GiB, "disk_bytes": GiB,
                                "gpus": [{"index": 0, "name": "NVIDIA A10G", "vendor": "nvidia", "memory_bytes": 23028 * 2**20}]})
    assert isinstance(place(g, [AgentView("a", a10g)], {}), Assignment)
    small = HostFacts.from_json({"name": "l", "cpus": 8, "memory_bytes": 64 * GiB, "disk_bytes": GiB,
                                "gpus": [{"index": 0, "name": "NVIDIA A10G", "vendor": "nvidia", "memory_bytes": 16 * GiB}]})
    assert isinstance(place(g, [AgentView("l", small)], {}), NoCapacity)


def test_memory_is_reserved_but_cpus_are_shared() -> None:
    g = parse_service(service(group("web", memory=24 * GiB))).groups[0]
    agents = [AgentView("small", host("small", cpus=2, memory=32 * GiB))]
    first = place(g, agents, {})
    assert isinstance(first, Assignment) and first.reservation.memory_bytes == 24 * GiB
    second = place(g, agents, {"small": [first.reservation]})
    assert isinstance(second, NoCapacity) and "memory" in second.message()
    too_many_cpus = parse_service(service(group("big"))).groups[0]
    assert isinstance(place(too_many_cpus, [AgentView("one", host("one", cpus=1))], {}), Assignment)


def test_placement_labels_filter_agents_across_fleets() -> None:
    g = parse_service(
        service(group("spot", placement={"backends": ["aws"], "regions": ["us-east-1"], "spot_policy": "spot", "max_price": 2.0}))
    ).groups[0]
    agents = [
        AgentView("local", host("local"), {"backend": "local"}),
        AgentView("aws-eu", host("aws-eu"), {"backend": "aws", "region": "eu-west-1", "spot": True, "price": 1.0}),
        AgentView("aws-od", host("aws-od"), {"backend": "aws", "region": "us-east-1", "spot": False, "price": 1.0}),
        AgentView("aws-dear", host("aws-dear"), {"backend": "aws", "region": "us-east-1", "spot": True, "price": 3.5}),
        AgentView("aws-ok", host("aws-ok"), {"backend": "aws", "region": "us-east-1", "spot": True, "price": 1.5}),
    ]
    got = place(g, agents, {})
    assert isinstance(got, Assignment) and got.agent == "aws-ok"
    as_strings = AgentView("str", host("str"), {"backend": "aws", "region": "us-east-1", "spot": "false", "price": "1.0"})
    assert "on-demand" in place(g, [as_strings], {}).message()  # type: ignore[union-attr]
    failed = place(g, agents[:4], {})
    assert isinstance(failed, NoCapacity)
    text = failed.message()
    assert "backend 'local'" in text and "region 'eu-west-1'" in text and "on-demand" in text and "max_price" in text


def test_replicas_of_a_group_spread_over_hosts_and_skip_unhealthy_agents() -> None:
    g = parse_service(service(group("web"))).groups[0]
    agents = [AgentView("a", host("a")), AgentView("b", host("b")), AgentView("c", host("c"), healthy=False)]
    first = place(g, agents, {}, spread={"a": 1})
    assert isinstance(first, Assignment) and first.agent == "b"
    none = place(g, [agents[2]], {})
    assert isinstance(none, NoCapacity) and "unreachable" in none.message()
    assert Reservation() == Reservation(0, 0, ())


def test_an_image_needs_a_host_with_docker() -> None:
    g = parse_service(service({**group("img"), "image": "vllm/vllm-openai:latest", "commands": []})).groups[0]
    docker_host = HostFacts.from_json({"name": "d", "cpus": 4, "memory_bytes": GiB, "disk_bytes": GiB, "docker": True})
    got = place(g, [AgentView("plain", host("plain")), AgentView("docker", docker_host)], {})
    assert isinstance(got, Assignment) and got.agent == "docker"
    refused = place(g, [AgentView("plain", host("plain"))], {})
    assert isinstance(refused, NoCapacity) and "needs Docker" in refused.message()


# ---------------------------------------------------------------------------------- rollout
def rv(rid: str, gen: str, ready: bool = True, failed: bool = False, at: float = 0.0) -> ReplicaView:
    return ReplicaView(rid, gen, ready, failed, at)


def test_steady_state_starts_missing_and_stops_surplus_not_ready_first() -> None:
    plan = plan_group("g", "v1", 3, [rv("a", "v1")], now=10, deadline=60)
    assert plan.start == 2 and plan.stop == () and plan.rollout is None
    plan = plan_group("g", "v1", 1, [rv("a", "v1", at=1), rv("b", "v1", ready=False, at=2), rv("c", "v1", at=3)], now=10, deadline=60)
    assert plan.start == 0 and set(plan.stop) == {"b", "c"}


def test_crashed_replica_is_stopped_and_replaced() -> None:
    plan = plan_group("g", "v1", 2, [rv("a", "v1"), rv("b", "v1", ready=False, failed=True)], now=10, deadline=60)
    assert plan.stop == ("b",) and plan.start == 1


def test_rolling_update_surges_one_and_never_drops_ready_replicas() -> None:
    replicas = [rv("o1", "v1", at=1), rv("o2", "v1", at=2)]
    t = 10.0
    steps = 0
    while steps < 20:
        steps += 1
        plan = plan_group("g", "v2", 2, replicas, now=t, deadline=60)
        ready_before = sum(r.ready for r in replicas)
        replicas = [r for r in replicas if r.id not in plan.stop]
        # Stops only happen once a new replica is ready to take over.
        assert sum(r.ready for r in replicas) >= min(ready_before, 2)
        assert plan.start <= 1
        for i in range(plan.start):
            replicas.append(rv(f"n{steps}{i}", "v2", ready=False, at=t))
        t += 1
        # every new replica becomes ready one tick later
        replicas = [rv(r.id, r.generation, True, False, r.created_at) for r in replicas]
        if plan.rollout is not None and plan.rollout.state == "done":
            break
    assert {r.generation for r in replicas} == {"v2"} and len(replicas) == 2
    assert plan.rollout is not None and plan.rollout.state == "done" and plan.rollout.updated == 2


def test_rollout_fails_when_new_version_crashes_and_falls_back() -> None:
    replicas = [rv("o1", "v1"), rv("o2", "v1"), rv("n1", "v2", ready=False, failed=True, at=5)]
    plan = plan_group("g", "v2", 2, replicas, now=10, deadline=60)
    assert plan.failed_generation == "v2" and plan.stop == ("n1",) and plan.start == 0
    assert plan.rollout is not None and plan.rollout.state == "failed" and "keeps serving" in plan.rollout.message
    # Later ticks keep the old version at the desired count, replacing its failures from v1.
    later = plan_group("g", "v2", 2, [rv("o1", "v1"), rv("o2", "v1", failed=True)], now=20, deadline=60,
                       failed_generation="v2", fallback_generation="v1")
    assert later.target == "v1" and later.start == 1 and later.stop == ("o2",)
    assert later.rollout is not None and later.rollout.state == "failed"


def test_rollout_fails_past_the_deadline() -> None:
    replicas = [rv("o1", "v1"), rv("n1", "v2", ready=False, at=0)]
    assert plan_group("g", "v2", 1, replicas, now=30, deadline=60).failed_generation is None
    plan = plan_group("g", "v2", 1, replicas, now=61, deadline=60)
    assert plan.failed_generation == "v2" and "deadline" in (plan.rollout.message if plan.rollout else "")


# ------------------------------------------------------------------------------------ store
def test_store_persists_registrations_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "controller.db"
    s = Store(path)
    s.put_agent(AgentRecord("a1", "http://127.0.0.1:1", "secret-token", {"backend": "local"}))
    svc = parse_service(service(group("base")))
    s.put_service(ServiceRecord(svc, None, {"groups": {}, "failed_generation": {"base": "x"}}))
    s.put_placement(PlacementRecord("llm-base-g1-1", "llm", "base", "g1", "a1", (0, 1), 1.0))
    assert s.next_index("llm-base-g1") == 1 and s.next_index("llm-base-g1") == 2
    s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    s = Store(path)
    assert [a.name for a in s.agents()] == ["a1"] and s.agents()[0].token == "secret-token"
    assert "secret-token" not in repr(s.agents()[0])
    [rec] = s.services()
    assert rec.definition == svc and rec.rollout == {"groups": {}, "failed_generation": {"base": "x"}}
    assert s.placements()[0].gpus == (0, 1)
    assert s.next_index("llm-base-g1") == 3
    s.delete_service("llm")
    assert s.services() == [] and s.placements() == []
    s.close()


# ---------------------------------------------------------------------------------- routers
def test_router_definitions_are_validated_into_gateway_routes() -> None:
    from gpustack_iac.runtime.controller.model import parse_router
    from gpustack_iac.runtime.controller.publish import router_route

    router = parse_router({"name": "llm", "strategy": "cost", "members": [{"service": "a", "cost": 2.0}, {"service": "b"}]})
    route = router_route(router)
    assert route.name == "llm" and [m.service for m in route.members] == ["a", "b"]
    assert route.members[1].cost == 0.0 and route.retries == 2
    with pytest.raises(ServiceDefinitionError, match="strategy"):
        router_route(parse_router({"name": "x", "strategy": "random", "members": [{"service": "a"}]}))
    with pytest.raises(ServiceDefinitionError, match="members"):
        parse_router({"name": "x", "members": []})


# ----------------------------------------------------------------------------------- probes
def test_probes_against_a_real_http_server() -> None:
    import asyncio

    import aiohttp
    from aiohttp import web

    from gpustack_iac.runtime.controller.model import Probe
    from gpustack_iac.runtime.controller.probes import probe_replica

    async def scenario() -> None:
        async def ok(_r: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def sick(_r: web.Request) -> web.Response:
            return web.Response(status=503)

        async def slow(_r: web.Request) -> web.Response:
            await asyncio.sleep(1.0)
            return web.Response()

        async def moved(_r: web.Request) -> web.Response:
            raise web.HTTPFound("/elsewhere")

        app = web.Application()
        app.router.add_get("/", ok)
        app.router.add_get("/sick", sick)
        app.router.add_get("/slow", slow)
        app.router.add_get("/moved", moved)
        app.router.add_post("/post", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        closed = f"http://127.0.0.1:{closed_port()}"
        try:
            async with aiohttp.ClientSession() as session:
                assert (await probe_replica(session, url, None)).ok
                assert (await probe_replica(session, url, Probe(url="/moved"))).ok  # 3xx: it answers
                assert (await probe_replica(session, url, Probe(url="post", method="POST", body="{}"))).ok
                sick_result = await probe_replica(session, url, Probe(url="/sick"))
                assert not sick_result.ok and sick_result.detail == "503"
                slow_result = await probe_replica(session, url, Probe(url="/slow", timeout=0.2))
                assert not slow_result.ok and "timeout" in slow_result.detail
                assert not (await probe_replica(session, closed, None)).ok
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_group_with_volumes_goes_only_to_their_host() -> None:
    data = service(group("web"))
    data["groups"][0]["hosts"] = ["b"]
    data["groups"][0]["mounts"] = [{"source": "/srv/v", "target": "/data", "name": "v"}]
    g = parse_service(data).groups[0]
    got = place(g, [AgentView("a", host("a")), AgentView("b", host("b"))], {})
    assert isinstance(got, Assignment) and got.agent == "b"
    refused = place(g, [AgentView("a", host("a"))], {})
    assert isinstance(refused, NoCapacity) and "not the host of the group's volumes (b)" in refused.message()


def test_no_capacity_backs_off_exponentially_then_resets() -> None:
    import asyncio
    from types import SimpleNamespace

    from gpustack_iac.runtime.controller.replica_start import start_replicas
    from gpustack_iac.runtime.controller.live import ServiceState

    definition = parse_service(service(group("web")))
    g = definition.groups[0]
    tiny = HostFacts.from_json({"name": "t", "cpus": 0, "memory_bytes": 0, "disk_bytes": 0})
    agent = SimpleNamespace(record=SimpleNamespace(name="t", labels={}), host=tiny, healthy=True)
    core = SimpleNamespace(agents={"t": agent}, replicas={}, taken=lambda: {}, draining=set())
    st = ServiceState(definition=definition)
    gaps = []
    for now in (0.0, 100.0, 200.0, 300.0):
        asyncio.run(start_replicas(core, st, g, 1, now))  # type: ignore[arg-type]
        gaps.append(st.group(g.name).backoff_until - now)
    assert st.group(g.name).no_capacity_streak == 4 and "attempt 4" in (st.group(g.name).message or "")
    # Each wait is base × 2^(n-1) with up to half of it taken off at random: they grow.
    for n, gap in enumerate(gaps, start=1):
        assert 0.5 * 0.5 * 2 ** (n - 1) <= gap <= 0.5 * 2 ** (n - 1)
    # An agent whose facts are unknown yet is not "no capacity": no back-off for it.
    fresh = ServiceState(definition=definition)
    agent.host = None
    asyncio.run(start_replicas(core, fresh, g, 1, 0.0))  # type: ignore[arg-type]
    assert fresh.group(g.name).backoff_until == 0.0


def test_removing_a_host_waits_only_for_replicas_it_serves_and_only_when_another_host_can_take_them() -> None:
    """registrations._replaced: the drain before a host is removed waits for replacements of its *ready*
    replicas, and only while some other healthy host could run them (a stuck replica made `destroy` wait
    out the whole startup deadline)."""
    from types import SimpleNamespace

    from gpustack_iac.runtime.controller.live import ServiceState
    from gpustack_iac.runtime.controller.registrations import _replaced

    definition = parse_service(service(group("web")))
    st = ServiceState(definition=definition)
    st.group("web").desired = 1

    def replica(agent: str, ready: bool) -> SimpleNamespace:
        return SimpleNamespace(record=SimpleNamespace(service=definition.name, group="web", agent=agent), ready=ready, stopping=False)

    def core(agents: dict[str, bool], *replicas: SimpleNamespace) -> Any:
        return SimpleNamespace(services={definition.name: st}, draining=set(),
                               agents={n: SimpleNamespace(healthy=h) for n, h in agents.items()},
                               replicas={i: r for i, r in enumerate(replicas)})

    both = {"a": True, "b": True}
    assert not _replaced(core(both, replica("a", True)), "a")  # serving on a, nothing ready on b yet: wait
    assert _replaced(core(both, replica("a", True), replica("b", True)), "a")  # replaced on b: go
    assert _replaced(core(both, replica("a", False)), "a")  # never ready on a: serves nothing, no wait
    assert _replaced(core({"a": True}, replica("a", True)), "a")  # no other host: waiting changes nothing
    assert _replaced(core({"a": True, "b": False}, replica("a", True)), "a")  # b unhealthy: likewise
