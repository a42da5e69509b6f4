"""Rate limit units (token buckets, prefixes, path normalisation) and the gateway's 429 on each kind of route."""

from __future__ import annotations

import asyncio
import json

from gateway_fixtures import EchoStats, client, echo_app, gateway, run, serving, upstream
from gpustack_iac.runtime.gateway.ratelimit import RateLimiter, RateLimitRule, normalize_path, pick_rule, retry_after
from gpustack_iac.runtime.gateway.routing import RouterMember, RouterRoute, ServiceRoute


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_plus_one_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rule = RateLimitRule("/", rps=2.0, burst=3)
    assert [limiter.take("s", rule, "a") for _ in range(4)] == [0.0] * 4
    wait = limiter.take("s", rule, "a")
    assert wait == 0.5 and retry_after(wait) == 1
    assert limiter.take("s", rule, "b") == 0.0  # another key has its own bucket
    assert limiter.take("t", rule, "a") == 0.0  # and so has another service
    clock.now += 0.5
    assert limiter.take("s", rule, "a") == 0.0
    assert limiter.take("s", rule, "a") > 0
    clock.now += 100  # refilled up to the burst, never beyond
    assert [limiter.take("s", rule, "a") for _ in range(5)].count(0.0) == 4
    assert retry_after(0.01) == 1 and retry_after(2.2) == 3


def test_full_buckets_are_pruned_first_at_the_key_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(clock, max_keys=10)
    rule = RateLimitRule("/", rps=1.0, burst=0)
    for i in range(10):
        limiter.take("s", rule, str(i))
    clock.now += 5  # every bucket is full again
    limiter.take("s", rule, "busy")
    assert len(limiter) == 1
    for i in range(20):  # none full: the oldest half goes, the table stays bounded
        limiter.take("s", rule, f"k{i}")
    assert len(limiter) <= 10


def test_longest_prefix_wins_on_the_normalised_path() -> None:
    rules = (RateLimitRule("/", 10), RateLimitRule("/v1", 5), RateLimitRule("/v1/chat", 1))
    assert pick_rule(rules, "/v1/chat/completions") == rules[2]
    assert pick_rule(rules, "/v1//chat/completions") == rules[2]
    assert pick_rule(rules, "/v1/%63hat/completions") == rules[2]
    assert pick_rule(rules, "/x/../v1/./chat") == rules[2]
    assert pick_rule(rules, "/v1/models") == rules[1]
    assert pick_rule(rules, "/health") == rules[0]
    assert pick_rule(rules[1:], "/health") is None
    assert pick_rule((), "/v1") is None
    assert normalize_path("/a//b/") == "/a/b/" and normalize_path("/..") == "/" and normalize_path("/a/b") == "/a/b"


def test_429_on_service_host_and_model_routes_and_in_order_on_a_pipelined_connection() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        limits = (RateLimitRule("/v1/chat", rps=0.01, burst=0), RateLimitRule("/x", rps=0.01, burst=1, header="X-Key"))
        async with serving(echo_app(stats)) as u, gateway(domain="example.test") as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model="m", upstreams=(upstream("r", "g", u),), rate_limits=limits))
            async with client() as http:
                body = {"model": "m"}
                async with http.post(f"{gw.url}/v1/chat/completions", json=body, headers=gw.auth) as r:
                    assert r.status == 200
                async with http.post(f"{gw.url}/v1/chat/completions", json=body, headers=gw.auth) as r:
                    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
                    assert (await r.json())["error"]["code"] == "rate_limited"
                # The same bucket through /services/<name>/ and through Host: <name>.<domain>.
                async with http.get(f"{gw.url}/services/svc/v1/chat", headers=gw.auth) as r:
                    assert r.status == 429
                async with http.get(f"{gw.url}/v1/chat", headers={**gw.auth, "Host": "svc.example.test"}) as r:
                    assert r.status == 429
                async with http.get(f"{gw.url}/services/svc/free", headers=gw.auth) as r:
                    assert r.status == 200
            assert stats.requests == 2
            # Pipelined on one connection: a refused GET answers in its turn and the connection goes on.
            port = int(gw.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                one = f"GET /services/svc/x/{{}} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {gw.token}\r\nX-Key: k\r\n\r\n"
                writer.write("".join(one.format(i) for i in range(4)).encode())
                statuses = []
                for _ in range(4):
                    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)).decode("latin-1")
                    length = int(head.lower().split("content-length: ", 1)[1].split("\r\n", 1)[0])
                    payload = await asyncio.wait_for(reader.readexactly(length), 20)
                    statuses.append(int(head.split(" ")[1]))
                    if statuses[-1] == 200:
                        assert json.loads(payload)["path"] == f"/x/{len(statuses) - 1}"
                assert statuses == [200, 200, 429, 429]
            finally:
                writer.close()

    run(scenario())


def test_a_router_alias_skips_members_over_their_limit_and_answers_429_when_all_are() -> None:
    async def scenario() -> None:
        a, b = EchoStats("a"), EchoStats("b")
        limit = (RateLimitRule("/v1", rps=0.01, burst=0),)
        async with serving(echo_app(a)) as ua, serving(echo_app(b)) as ub, gateway() as gw:
            gw.table.set_service(ServiceRoute("sa", auth=True, model="ma", upstreams=(upstream("ra", "g", ua),), rate_limits=limit))
            gw.table.set_service(ServiceRoute("sb", auth=True, model="mb", upstreams=(upstream("rb", "g", ub),), rate_limits=limit))
            gw.table.set_router(RouterRoute("alias", "priority", (RouterMember("sa", priority=0), RouterMember("sb", priority=1))))
            async with client() as http:
                served = []
                for _ in range(3):
                    async with http.post(f"{gw.url}/v1/chat/completions", json={"model": "alias"}, headers=gw.auth) as r:
                        served.append(r.status)
                        if r.status == 429:
                            assert int(r.headers["Retry-After"]) >= 1
                assert served == [200, 200, 429]
            assert (a.requests, b.requests) == (1, 1)

    run(scenario())
