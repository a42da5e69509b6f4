"""Scale from zero: the gateway holds a request while the controller starts a replica."""

from __future__ import annotations

import asyncio

from gateway_fixtures import EchoStats, client, echo_app, gateway, poll_until, run, serving, upstream
from gpustack_iac.runtime.gateway.routing import ServiceRoute
from gpustack_iac.runtime.gateway.settings import GatewaySettings


def test_request_waits_for_the_first_replica_then_is_served() -> None:
    async def scenario() -> None:
        stats = EchoStats("first")
        asked: list[str] = []
        async with serving(echo_app(stats)) as u, gateway(settings=GatewaySettings(hold_timeout=30)) as gw:
            gw.table.on_demand(asked.append)
            gw.table.set_service(ServiceRoute("zero", auth=True, model="tiny", upstreams=(), min_replicas_zero=True))
            async with client() as http:
                pending = asyncio.ensure_future(
                    http.post(f"{gw.url}/v1/chat/completions", json={"model": "tiny", "messages": []}, headers=gw.auth)
                )
                await poll_until(lambda: gw.metrics.snapshot().get("zero") is not None and gw.metrics.snapshot()["zero"].waiting == 1)
                assert asked == ["zero"]  # the controller was told at once
                await asyncio.sleep(1.0)  # the "replica" takes a while to start
                assert not pending.done()
                gw.table.set_service(ServiceRoute("zero", auth=True, model="tiny", upstreams=(upstream("r", "g", u),), min_replicas_zero=True))
                response = await pending
                assert response.status == 200
                assert (await response.json())["replica"] == "first"
                response.release()
            load = gw.metrics.snapshot()["zero"]
            assert load.waiting == 0 and load.errors_total == 0 and load.requests_total == 1

    run(scenario())


def test_full_hold_queue_answers_503_at_once_and_timeout_answers_503() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway(settings=GatewaySettings(hold_queue=1, hold_timeout=30)) as gw:
            gw.table.set_service(ServiceRoute("zero", auth=True, model=None, upstreams=(), min_replicas_zero=True))
            async with client() as http:
                first = asyncio.ensure_future(http.get(f"{gw.url}/services/zero/", headers=gw.auth))
                await poll_until(lambda: "zero" in gw.metrics.snapshot() and gw.metrics.snapshot()["zero"].waiting == 1)
                async with http.get(f"{gw.url}/services/zero/", headers=gw.auth) as r:
                    assert r.status == 503
                    assert (await r.json())["error"]["code"] == "hold_queue_full"
                gw.table.set_service(ServiceRoute("zero", auth=True, model=None, upstreams=(upstream("r", "g", u),), min_replicas_zero=True))
                response = await first
                assert response.status == 200
                response.release()
        async with gateway(settings=GatewaySettings(hold_timeout=0.5)) as gw:
            gw.table.set_service(ServiceRoute("zero", auth=True, model=None, upstreams=(), min_replicas_zero=True))
            async with client() as http:
                async with http.get(f"{gw.url}/services/zero/", headers=gw.auth) as r:
                    assert r.status == 503
                    assert (await r.json())["error"]["code"] == "no_ready_replica"
            assert gw.metrics.snapshot()["zero"].waiting == 0

    run(scenario())


def test_held_request_fails_cleanly_when_the_service_is_removed() -> None:
    async def scenario() -> None:
        async with gateway(settings=GatewaySettings(hold_timeout=30)) as gw:
            gw.table.set_service(ServiceRoute("zero", auth=True, model=None, upstreams=(), min_replicas_zero=True))
            async with client() as http:
                pending = asyncio.ensure_future(http.get(f"{gw.url}/services/zero/", headers=gw.auth))
                await poll_until(lambda: "zero" in gw.metrics.snapshot() and gw.metrics.snapshot()["zero"].waiting == 1)
                gw.table.remove_service("zero")
                response = await pending
                assert response.status == 503
                response.release()

    run(scenario())
