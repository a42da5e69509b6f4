"""The gateway data plane against real loopback upstreams: routing, auth, balancing, retries, errors, metrics."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from gateway_fixtures import EchoStats, client, closed_port, echo_app, gateway, run, serving, upstream
from gpustack_iac.runtime.gateway.balancer import Balancer
from gpustack_iac.runtime.gateway.routing import ServiceRoute
from tests.support.wait import wait_until_async


def test_least_outstanding_spreads_over_every_replica_of_every_group() -> None:
    async def scenario() -> None:
        stats = [EchoStats("base-0"), EchoStats("overflow-0"), EchoStats("overflow-1")]
        async with serving(echo_app(stats[0], delay=0.3)) as u0, serving(echo_app(stats[1], delay=0.3)) as u1, serving(
            echo_app(stats[2], delay=0.3)
        ) as u2, gateway() as gw:
            gw.table.set_service(
                ServiceRoute(
                    "llm", auth=True, model=None,
                    upstreams=(upstream("r0", "base", u0), upstream("r1", "overflow", u1), upstream("r2", "overflow", u2)),
                )
            )
            async with client() as http:

                async def one(i: int) -> str:
                    async with http.get(f"{gw.url}/services/llm/item/{i}", headers=gw.auth) as r:
                        assert r.status == 200, await r.text()
                        return str((await r.json())["replica"])

                served = await asyncio.gather(*(one(i) for i in range(30)))
            counts = {s.name: served.count(s.name) for s in stats}
            # Thirty concurrent slow requests over three replicas: each gets a share, no replica hoards.
            assert all(c >= 5 for c in counts.values()), counts
            assert max(s.max_in_flight for s in stats) <= 20
            load = gw.metrics.snapshot()["llm"]
            assert load.requests_total == 30 and load.in_flight == 0 and load.errors_total == 0
            assert load.per_group["base"].requests_total == counts["base-0"]
            assert load.per_group["overflow"].requests_total == counts["overflow-0"] + counts["overflow-1"]

    run(scenario())


def test_least_outstanding_prefers_the_idle_replica() -> None:
    async def scenario() -> None:
        slow, fast = EchoStats("slow"), EchoStats("fast")
        async with serving(echo_app(slow, delay=5.0)) as us, serving(echo_app(fast)) as uf, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("s", "a", us), upstream("f", "b", uf))))
            async with client() as http:
                async def get() -> str:
                    async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                        return str((await r.json())["replica"])

                # Make the slow replica busy. Two requests at once split over the tied replicas, unless
                # a loaded machine finished the first before the second arrived: then send another. With
                # HAProxy's two threads both may pick the slow one (each chose before the other's
                # connection counted; seen on a loaded machine): busy all the same.
                pending = [asyncio.ensure_future(get()), asyncio.ensure_future(get())]
                for _ in range(10):
                    await wait_until_async(lambda: slow.in_flight > 0 or all(t.done() for t in pending), 60.0, 0.01,
                                           "a request on the slow replica, or every request answered")
                    if slow.in_flight:
                        break
                    pending.append(asyncio.ensure_future(get()))
                assert slow.in_flight >= 1
                # While it is busy, the idle one takes every later request.
                later = []
                for _ in range(5):
                    replica = await get()
                    if slow.in_flight:  # the slow answer is seconds away; on a stalled machine it may come
                        later.append(replica)
                assert later and later == ["fast"] * len(later)
                await asyncio.gather(*pending)

    run(scenario())


def test_balancer_breaks_ties_round_robin_and_picks_least_loaded() -> None:
    a, b, c = upstream("a", "g1", "http://127.0.0.1:1"), upstream("b", "g2", "http://127.0.0.1:2"), upstream("c", "g2", "http://127.0.0.1:3")
    bal = Balancer()
    picks = [bal.pick((a, b, c)) for _ in range(6)]
    assert {p.replica_id for p in picks if p} == {"a", "b", "c"}
    bal.acquire(a)
    bal.acquire(b)
    assert bal.pick((a, b, c)) == c
    assert bal.pick((a, b, c), exclude=frozenset({c.url})) in (a, b)
    bal.release(a)
    bal.release(b)
    assert bal.total((a, b, c)) == 0


def test_bearer_auth_required_and_token_never_forwarded() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/svc/x") as r:
                    assert r.status == 401
                    assert (await r.json())["error"]["code"] == "unauthorized"
                async with http.get(f"{gw.url}/services/svc/x", headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401
                # An unknown service does not reveal itself to an unauthenticated client.
                async with http.get(f"{gw.url}/services/nope/x") as r:
                    assert r.status == 401
                async with http.get(f"{gw.url}/services/nope/x", headers=gw.auth) as r:
                    assert r.status == 404
                    assert (await r.json())["error"]["code"] == "unknown_service"
                async with http.get(
                    f"{gw.url}/services/svc/a/b?q=1%202", headers={**gw.auth, "Connection": "keep-alive, X-Hop", "X-Hop": "1", "X-Keep": "2"}
                ) as r:
                    assert r.status == 200
                    seen = await r.json()
            assert stats.requests == 1  # the refused requests never reached the replica
            assert seen["path"] == "/a/b?q=1%202"
            headers = {k.lower(): v for k, v in seen["headers"].items()}
            assert "authorization" not in headers
            assert "x-hop" not in headers and headers["x-keep"] == "2"
            assert headers["x-forwarded-for"] == "127.0.0.1"
            assert headers["x-forwarded-proto"] == "http"

    run(scenario())


def test_auth_false_opens_a_service_and_passes_its_own_authorization() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("open", auth=False, model=None, upstreams=(upstream("r", "g", u),)))
            gw.table.set_service(ServiceRoute("closed", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/open/", headers={"Authorization": "Bearer app-level"}) as r:
                    assert r.status == 200
                    seen = await r.json()
                    assert seen["headers"]["Authorization"] == "Bearer app-level"
                async with http.get(f"{gw.url}/services/open/", headers=gw.auth) as r:
                    assert "Authorization" not in (await r.json())["headers"]
                async with http.get(f"{gw.url}/services/closed/") as r:
                    assert r.status == 401

    run(scenario())


def test_openai_routing_by_model_and_models_list() -> None:
    async def scenario() -> None:
        s1, s2 = EchoStats("one"), EchoStats("two")
        async with serving(echo_app(s1)) as u1, serving(echo_app(s2)) as u2, gateway() as gw:
            gw.table.set_service(ServiceRoute("a", auth=True, model="org/model-a", upstreams=(upstream("a0", "g", u1),)))
            gw.table.set_service(ServiceRoute("b", auth=False, model="org/model-b", model_prefix="/openai/v1", upstreams=(upstream("b0", "g", u2),)))
            body = b'{"model": "org/model-b",   "messages": [{"role": "user", "content": "hi"}]}'
            async with client() as http:
                async with http.post(f"{gw.url}/v1/chat/completions", data=body, headers={**gw.auth, "Content-Type": "application/json"}) as r:
                    assert r.status == 200
                    seen = await r.json()
                assert seen["replica"] == "two"
                assert seen["path"] == "/openai/v1/chat/completions"
                assert seen["body"] == body.decode()  # forwarded byte for byte
                async with http.post(f"{gw.url}/v1/embeddings", json={"model": "org/model-a", "input": "x"}, headers=gw.auth) as r:
                    assert (await r.json())["path"] == "/v1/embeddings"
                async with http.post(f"{gw.url}/v1/completions", json={"model": "org/model-a", "prompt": "x"}) as r:
                    assert r.status == 401  # model-a needs the token
                async with http.post(f"{gw.url}/v1/completions", json={"model": "nope"}, headers=gw.auth) as r:
                    assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_model"
                async with http.post(f"{gw.url}/v1/completions", data=b"not json", headers=gw.auth) as r:
                    assert r.status == 400
                async with http.get(f"{gw.url}/v1/models", headers=gw.auth) as r:
                    listing = await r.json()
                assert listing["object"] == "list"
                assert [m["id"] for m in listing["data"]] == ["org/model-a", "org/model-b"]
                assert all(m["object"] == "model" for m in listing["data"])
                async with http.get(f"{gw.url}/v1/models") as r:
                    assert [m["id"] for m in (await r.json())["data"]] == ["org/model-b"]  # only the open one

    run(scenario())


def test_host_header_routing() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway(domain="example.com") as gw:
            gw.table.set_service(ServiceRoute("chat", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.get(f"{gw.url}/keep/path", headers={**gw.auth, "Host": "chat.example.com"}) as r:
                    assert r.status == 200
                    assert (await r.json())["path"] == "/keep/path"
                async with http.get(f"{gw.url}/x", headers={**gw.auth, "Host": "other.example.com"}) as r:
                    assert r.status == 404

    run(scenario())


def test_connect_failure_is_retried_on_another_replica() -> None:
    async def scenario() -> None:
        stats = EchoStats("alive")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            dead = f"http://127.0.0.1:{closed_port()}"
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("d", "gone", dead), upstream("a", "ok", u))))
            async with client() as http:
                for i in range(20):
                    async with http.post(f"{gw.url}/services/svc/op", data=f"payload-{i}", headers=gw.auth) as r:
                        assert r.status == 200
                        assert (await r.json())["body"] == f"payload-{i}"  # the body survives the retry
            assert stats.requests == 20
            load = gw.metrics.snapshot()["svc"]
            assert load.errors_total == 0
            assert load.per_group["gone"].errors_total >= 1  # the balancer did try the dead replica
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("d", "gone", dead),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                    assert r.status == 502
                    assert (await r.json())["error"]["code"] == "upstream_failed"

    run(scenario())


def test_no_ready_replica_is_a_clear_503() -> None:
    async def scenario() -> None:
        async with gateway() as gw:
            gw.table.set_service(ServiceRoute("empty", auth=True, model="m", upstreams=()))
            async with client() as http:
                async with http.get(f"{gw.url}/services/empty/", headers=gw.auth) as r:
                    assert r.status == 503
                    assert (await r.json())["error"]["code"] == "no_ready_replica"
                async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "m"}, headers=gw.auth) as r:
                    assert r.status == 503
            assert gw.metrics.snapshot()["empty"].errors_total == 2

    run(scenario())


def test_upstream_status_and_headers_pass_through() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats, status=418)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                    assert r.status == 418
                    assert r.headers["Content-Type"].startswith("application/json")
                    assert json.loads(await r.text())["replica"] == "r"

    run(scenario())


def test_metrics_endpoint_is_protected_prometheus_text() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "grp", u),)))
            async with client() as http:
                for _ in range(3):
                    async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                        assert r.status == 200
                async with http.get(f"{gw.url}/metrics") as r:
                    assert r.status == 401
                async with http.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {gw.admin_token}"}) as r:
                    assert r.status == 200
                    assert r.content_type == "text/plain"
                    text = await r.text()
            assert 'gpustack_service_requests_total{service="svc"} 3' in text
            assert 'gpustack_group_requests_total{service="svc",group="grp"} 3' in text
            assert 'gpustack_service_request_seconds_count{service="svc"} 3' in text
            assert 'gpustack_service_request_seconds_bucket{service="svc",le="+Inf"} 3' in text
            assert "# TYPE gpustack_service_request_seconds histogram" in text

    run(scenario())


def test_large_body_is_streamed_with_its_content_length() -> None:
    """A large upstream body (over the buffer limit) is streamed with its Content-Length kept."""

    async def scenario() -> None:
        from aiohttp import web

        blob = b"x" * (600 * 1024)

        async def big(request: web.Request) -> web.Response:
            return web.Response(body=blob, content_type="application/octet-stream")

        app = web.Application()
        app.router.add_get("/big", big)
        async with serving(app) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{gw.url}/services/svc/big", headers=gw.auth) as r:
                    assert r.status == 200
                    assert r.headers["Content-Length"] == str(len(blob))
                    assert await r.read() == blob

    run(scenario())


def test_reset_before_any_response_byte_is_retried_on_another_replica() -> None:
    async def scenario() -> None:
        resets = 0

        async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal resets
            await reader.readuntil(b"\r\n\r\n")  # take the request, answer nothing, hang up
            resets += 1
            writer.close()

        server = await asyncio.start_server(slam, "127.0.0.1", 0)
        try:
            slam_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            stats = EchoStats("good")
            async with serving(echo_app(stats)) as u, gateway() as gw:
                gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("bad", "g1", slam_url), upstream("ok", "g2", u))))
                async with client() as http:
                    for _ in range(10):
                        async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                            assert r.status == 200
            assert resets >= 1 and stats.requests == 10
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


def test_upstream_failing_mid_stream_cuts_the_response_without_retry() -> None:
    async def scenario() -> None:
        from aiohttp import web

        calls = 0

        async def broken(request: web.Request) -> web.StreamResponse:
            nonlocal calls
            calls += 1
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: one\n\n")
            await asyncio.sleep(0.1)
            assert request.transport is not None
            request.transport.abort()  # the replica dies mid-answer
            return response

        app = web.Application()
        app.router.add_get("/s", broken)
        async with serving(app) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/svc/s", headers=gw.auth) as r:
                    assert r.status == 200
                    first = await r.content.readline()
                    assert first == b"data: one\n"
                    try:
                        await r.read()
                        cut = False
                    except aiohttp.ClientPayloadError:
                        cut = True
                    assert cut, "the client must see the response is incomplete"
            assert calls == 1  # bytes were already sent: no retry
            assert gw.metrics.snapshot()["svc"].errors_total == 1

    run(scenario())


def test_hop_by_hop_response_headers_are_dropped() -> None:
    async def scenario() -> None:
        from aiohttp import web

        async def hop(request: web.Request) -> web.Response:
            return web.Response(text="x", headers={"Connection": "X-Internal", "X-Internal": "secret", "X-Public": "yes", "Keep-Alive": "timeout=5"})

        app = web.Application()
        app.router.add_get("/", hop)
        async with serving(app) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                    assert r.headers["X-Public"] == "yes"
                    assert "X-Internal" not in r.headers and "Keep-Alive" not in r.headers
                async with http.get(f"{gw.url}/metrics", headers=gw.auth) as r:
                    assert r.status == 200  # the service token may read metrics too

    run(scenario())
