"""Router aliases through the real gateway: every strategy, retry before the first byte, cooldown, fallbacks, fail-over under load."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway_fixtures import EchoStats, client, closed_port, echo_app, gateway, poll_until, run, serving, upstream
from gpustack_iac.runtime.gateway.routing import ROUTER_STRATEGIES, RouterMember, RouterRoute, ServiceRoute


def service(name: str, url: str | None, model: str | None = None) -> ServiceRoute:
    ups = (upstream(f"{name}-0", "g", url),) if url else ()
    return ServiceRoute(name, auth=True, model=model or f"model-{name}", upstreams=ups)


@pytest.mark.parametrize("strategy", ROUTER_STRATEGIES)
def test_every_strategy_serves_the_alias_and_counts_member_traffic(strategy: str) -> None:
    async def scenario() -> None:
        sa, sb = EchoStats("a"), EchoStats("b")
        async with serving(echo_app(sa, delay=0.05)) as ua, serving(echo_app(sb, delay=0.05)) as ub, gateway() as gw:
            gw.table.set_service(service("a", ua))
            gw.table.set_service(service("b", ub))
            gw.table.set_router(RouterRoute("chat", strategy, (RouterMember("a", weight=1, cost=1), RouterMember("b", weight=1, cost=2))))  # type: ignore[arg-type]
            async with client() as http:

                async def one() -> dict[str, object]:
                    async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "messages": []}, headers=gw.auth) as r:
                        assert r.status == 200, await r.text()
                        return dict(await r.json())

                seen = await asyncio.gather(*(one() for _ in range(12)))
                async with http.get(f"{gw.url}/v1/models", headers=gw.auth) as r:
                    assert "chat" in [m["id"] for m in (await r.json())["data"]]
            # Each member is told the model name it serves, not the alias.
            assert all(f'"model-{s["replica"]}"' in str(s["body"]) for s in seen)
            members = gw.metrics.router_snapshot()["chat"]
            assert sum(m.requests_total for m in members.values()) == 12
            assert all(m.errors_total == 0 and m.in_flight == 0 for m in members.values())
            if strategy in ("weighted", "least-busy"):
                assert sa.requests >= 3 and sb.requests >= 3  # both share the load
            if strategy in ("priority", "cost"):
                assert sa.requests == 12  # first / cheapest member takes everything while healthy

    run(scenario())


def test_retry_on_next_member_before_first_byte_then_cooldown() -> None:
    async def scenario() -> None:
        sick, healthy = EchoStats("sick"), EchoStats("healthy")
        async with serving(echo_app(sick, status=503)) as us, serving(echo_app(healthy)) as uh, gateway() as gw:
            gw.table.set_service(service("sick", us))
            gw.table.set_service(service("healthy", uh))
            gw.table.set_router(
                RouterRoute("chat", "priority", (RouterMember("sick"), RouterMember("healthy")), cooldown_failures=3, cooldown_seconds=60)
            )
            async with client() as http:
                for _ in range(10):
                    async with http.post(f"{gw.url}/v1/completions", json={"model": "chat", "prompt": "x"}, headers=gw.auth) as r:
                        assert r.status == 200
                        assert (await r.json())["replica"] == "healthy"
            assert sick.requests == 3  # three failures, then cooled down: no more traffic
            assert healthy.requests == 10
            members = gw.metrics.router_snapshot()["chat"]
            assert members["sick"].cooling_down and members["sick"].errors_total == 3
            assert members["healthy"].requests_total == 10

    run(scenario())


def test_last_member_error_is_passed_through_and_retries_are_bounded() -> None:
    async def scenario() -> None:
        stats = [EchoStats(n) for n in ("a", "b", "c")]
        async with serving(echo_app(stats[0], status=503)) as ua, serving(echo_app(stats[1], status=503)) as ub, serving(
            echo_app(stats[2])
        ) as uc, gateway() as gw:
            for s, u in zip(stats, (ua, ub, uc)):
                gw.table.set_service(service(s.name, u))
            # retries=1: two members at most; the third (healthy) one is beyond the budget.
            gw.table.set_router(RouterRoute("chat", "priority", tuple(RouterMember(s.name) for s in stats), retries=1, cooldown_failures=100))
            async with client() as http:
                async with http.post(f"{gw.url}/v1/completions", json={"model": "chat"}, headers=gw.auth) as r:
                    assert r.status == 503
                    assert (await r.json())["replica"] == "b"  # the last tried member's own answer
            assert [s.requests for s in stats] == [1, 1, 0]

    run(scenario())


def test_fallback_alias_serves_when_every_member_fails() -> None:
    async def scenario() -> None:
        backup = EchoStats("backup")
        async with serving(echo_app(backup)) as ub, gateway() as gw:
            dead = f"http://127.0.0.1:{closed_port()}"
            gw.table.set_service(service("primary", dead))
            gw.table.set_service(service("spare", ub, model="spare-model"))
            gw.table.set_router(RouterRoute("second", "priority", (RouterMember("spare"),)))
            gw.table.set_router(RouterRoute("chat", "priority", (RouterMember("primary"),), fallbacks=("second",)))
            gw.table.set_router(RouterRoute("direct", "priority", (RouterMember("primary"),), fallbacks=("spare-model",)))
            gw.table.set_router(RouterRoute("loop1", "priority", (RouterMember("primary"),), fallbacks=("loop2",)))
            gw.table.set_router(RouterRoute("loop2", "priority", (RouterMember("primary"),), fallbacks=("loop1",)))
            async with client() as http:
                async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "chat"}, headers=gw.auth) as r:
                    assert r.status == 200
                    seen = await r.json()
                    assert seen["replica"] == "backup" and '"spare-model"' in seen["body"]
                async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "direct"}, headers=gw.auth) as r:
                    assert r.status == 200 and (await r.json())["replica"] == "backup"
                # Fallbacks that point at each other end with a clear error instead of looping.
                async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "loop1"}, headers=gw.auth) as r:
                    assert r.status == 503
                    assert (await r.json())["error"]["code"] == "router_unavailable"

    run(scenario())


def test_stopping_one_member_shifts_all_traffic_to_the_other_without_failures() -> None:
    async def scenario() -> None:
        sa, sb = EchoStats("a"), EchoStats("b")
        runner_a = web.AppRunner(echo_app(sa), handler_cancellation=True, access_log=None)
        await runner_a.setup()
        stopped = False
        try:
            site = web.TCPSite(runner_a, "127.0.0.1", 0)
            await site.start()
            ua = f"http://127.0.0.1:{runner_a.addresses[0][1]}"
            async with serving(echo_app(sb)) as ub, gateway() as gw:
                gw.table.set_service(service("a", ua))
                gw.table.set_service(service("b", ub))
                gw.table.set_router(
                    RouterRoute("chat", "least-busy", (RouterMember("a"), RouterMember("b")), cooldown_failures=2, cooldown_seconds=120)
                )
                statuses: list[int] = []
                member_a_when_cooled: list[int] = []
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(200):
                    queue.put_nowait(i)

                async with client() as http:

                    async def worker() -> None:
                        nonlocal stopped
                        while True:
                            try:
                                i = queue.get_nowait()
                            except asyncio.QueueEmpty:
                                return
                            if i == 60 and not stopped:
                                stopped = True
                                await runner_a.cleanup()  # member a goes away mid-load
                            async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "i": i}, headers=gw.auth) as r:
                                statuses.append(r.status)
                                await r.read()
                            member_a = gw.metrics.router_snapshot()["chat"]["a"]
                            if member_a.cooling_down and not member_a_when_cooled:
                                member_a_when_cooled.append(member_a.requests_total)

                    await asyncio.gather(*(worker() for _ in range(8)))
                assert len(statuses) == 200
                assert statuses.count(200) == 200, sorted(set(statuses))  # not one failed request
                assert member_a_when_cooled, "member a was never cooled down"
                members = gw.metrics.router_snapshot()["chat"]
                # Not one attempt went to a after the cooldown began; b took all the rest.
                assert members["a"].requests_total == member_a_when_cooled[0]
                assert 1 <= sa.requests <= 60 and sb.requests == 200 - sa.requests
                assert members["a"].cooling_down and members["b"].errors_total == 0
        finally:
            if not stopped:
                await runner_a.cleanup()

    run(scenario())


def test_latency_strategy_moves_traffic_to_the_faster_member() -> None:
    async def scenario() -> None:
        slow, fast = EchoStats("slow"), EchoStats("fast")
        async with serving(echo_app(slow, delay=0.3)) as us, serving(echo_app(fast)) as uf, gateway() as gw:
            gw.table.set_service(service("slow", us))
            gw.table.set_service(service("fast", uf))
            gw.table.set_router(RouterRoute("chat", "latency", (RouterMember("slow"), RouterMember("fast"))))
            async with client() as http:
                served = []
                for _ in range(8):
                    async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "chat"}, headers=gw.auth) as r:
                        served.append((await r.json())["replica"])
            # Each member is measured once, then the one with the lower time to first byte takes the traffic.
            assert served[:2] == ["slow", "fast"] and served[2:] == ["fast"] * 6
            members = gw.metrics.router_snapshot()["chat"]
            assert members["slow"].ttfb_ewma_seconds is not None and members["fast"].ttfb_ewma_seconds is not None
            assert members["slow"].ttfb_ewma_seconds > members["fast"].ttfb_ewma_seconds

    run(scenario())


def test_cost_strategy_overflows_to_the_pricier_member_when_the_cheap_one_is_full() -> None:
    async def scenario() -> None:
        cheap, pricey = EchoStats("cheap"), EchoStats("pricey")
        async with serving(echo_app(cheap, delay=0.5)) as uc, serving(echo_app(pricey, delay=0.5)) as up, gateway() as gw:
            gw.table.set_service(service("cheap", uc))
            gw.table.set_service(service("pricey", up))
            gw.table.set_router(
                RouterRoute("chat", "cost", (RouterMember("pricey", cost=3.0), RouterMember("cheap", cost=1.0, max_in_flight_per_replica=2)))
            )
            async with client() as http:

                async def one() -> str:
                    async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "chat"}, headers=gw.auth) as r:
                        return str((await r.json())["replica"])

                served = await asyncio.gather(*(one() for _ in range(5)))
            assert served.count("cheap") == 2 and served.count("pricey") == 3

    run(scenario())


def test_router_holds_while_its_scale_to_zero_member_starts() -> None:
    async def scenario() -> None:
        stats = EchoStats("woken")
        asked: list[str] = []
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.on_demand(asked.append)
            gw.table.set_service(ServiceRoute("zero", auth=True, model="zero-model", upstreams=(), min_replicas_zero=True))
            gw.table.set_router(RouterRoute("chat", "priority", (RouterMember("zero"),)))
            async with client() as http:
                pending = asyncio.ensure_future(http.post(f"{gw.url}/v1/chat/completions", json={"model": "chat"}, headers=gw.auth))
                await poll_until(lambda: bool(asked))
                await asyncio.sleep(0.5)
                gw.table.set_service(ServiceRoute("zero", auth=True, model="zero-model", upstreams=(upstream("z", "g", u),), min_replicas_zero=True))
                response = await pending
                assert response.status == 200
                assert (await response.json())["replica"] == "woken"
                response.release()
            assert asked == ["zero"]

    run(scenario())
