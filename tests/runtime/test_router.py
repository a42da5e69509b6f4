"""Router strategies, cooldown and health on RouterBook, with an injected clock (deterministic)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.router import RouterBook
from gpustack_iac.runtime.gateway.routing import RouterMember, RouterRoute, RoutingTable, ServiceRoute, Upstream


@dataclass
class FakeClock:
    """A clock the test moves by hand (the clock is injected data, not our code being faked)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def make_book(*services: tuple[str, int]) -> tuple[RouterBook, RoutingTable, Metrics, FakeClock]:
    table = RoutingTable()
    for name, replicas in services:
        ups = tuple(Upstream(f"{name}-{i}", "g", f"http://127.0.0.1:{10000 + i}") for i in range(replicas))
        table.set_service(ServiceRoute(name, auth=True, model=name, upstreams=ups))
    metrics = Metrics()
    clock = FakeClock()
    return RouterBook(table, metrics, clock), table, metrics, clock


def names(members: list[RouterMember]) -> list[str]:
    return [m.service for m in members]


def test_priority_keeps_declaration_order_and_skips_members_without_replicas() -> None:
    book, table, _, _ = make_book(("a", 1), ("b", 1), ("c", 0))
    router = RouterRoute("alias", "priority", (RouterMember("c"), RouterMember("a"), RouterMember("b")))
    assert names(book.order(router)) == ["a", "b"]
    table.remove_service("a")
    assert names(book.order(router)) == ["b"]
    ranked = RouterRoute("ranked", "priority", (RouterMember("a", priority=5), RouterMember("b", priority=1)))
    table.set_service(ServiceRoute("a", auth=True, model="a", upstreams=(Upstream("a-0", "g", "http://127.0.0.1:10000"),)))
    assert names(book.order(ranked)) == ["b", "a"]  # lower priority value first


def test_weighted_is_smooth_and_proportional() -> None:
    book, _, _, _ = make_book(("a", 1), ("b", 1))
    router = RouterRoute("alias", "weighted", (RouterMember("a", weight=3), RouterMember("b", weight=1)))
    firsts = [book.order(router)[0].service for _ in range(8)]
    assert firsts.count("a") == 6 and firsts.count("b") == 2
    assert "b" in firsts[:4] and "b" in firsts[4:]  # spread, not a burst of four a's then b's
    assert names(book.order(router))[1:] in (["a"], ["b"])  # the other member stays as the fail-over


def test_least_busy_counts_in_flight_per_ready_replica() -> None:
    book, _, metrics, _ = make_book(("a", 1), ("b", 4))
    router = RouterRoute("alias", "least-busy", (RouterMember("a"), RouterMember("b")))
    assert names(book.order(router)) == ["a", "b"]  # tie: declaration order
    for _ in range(2):
        metrics.member_started("alias", "a")
    for _ in range(4):
        metrics.member_started("alias", "b")
    # a: 2 per replica, b: 1 per replica.
    assert names(book.order(router)) == ["b", "a"]


def test_latency_follows_the_ewma_of_time_to_first_byte() -> None:
    book, _, metrics, _ = make_book(("a", 1), ("b", 1))
    router = RouterRoute("alias", "latency", (RouterMember("a"), RouterMember("b")), ewma_alpha=0.5)
    book.succeeded(router, "a", 0.100)
    assert names(book.order(router)) == ["b", "a"]  # b has no sample yet: measured first
    book.succeeded(router, "b", 0.300)
    assert names(book.order(router)) == ["a", "b"]
    book.succeeded(router, "a", 0.900)  # a: 0.5*0.9 + 0.5*0.1 = 0.5 > 0.3
    assert book.health("alias", "a").ttfb_ewma == pytest.approx(0.5)
    assert names(book.order(router)) == ["b", "a"]
    assert metrics.router_snapshot()["alias"]["a"].ttfb_ewma_seconds == pytest.approx(0.5)


def test_cost_prefers_the_cheapest_member_with_headroom() -> None:
    book, _, metrics, _ = make_book(("cheap", 1), ("pricey", 1))
    router = RouterRoute(
        "alias", "cost",
        (RouterMember("pricey", cost=5.0), RouterMember("cheap", cost=1.0, max_in_flight_per_replica=2)),
    )
    assert names(book.order(router)) == ["cheap", "pricey"]
    metrics.member_started("alias", "cheap")
    assert names(book.order(router)) == ["cheap", "pricey"]
    metrics.member_started("alias", "cheap")  # at its limit: no headroom left
    assert names(book.order(router)) == ["pricey", "cheap"]
    metrics.member_finished("alias", "cheap", error=False)
    assert names(book.order(router)) == ["cheap", "pricey"]


def test_member_failing_n_times_is_cooled_down_for_t_seconds() -> None:
    book, _, metrics, clock = make_book(("a", 1), ("b", 1))
    router = RouterRoute("alias", "priority", (RouterMember("a"), RouterMember("b")), cooldown_failures=3, cooldown_seconds=30)
    book.failed(router, "a")
    book.failed(router, "a")
    assert names(book.order(router)) == ["a", "b"]  # two failures: still first
    book.succeeded(router, "a", 0.01)  # a success resets the count
    for _ in range(2):
        book.failed(router, "a")
    assert not book.is_cooling("alias", "a")
    book.failed(router, "a")
    assert book.is_cooling("alias", "a")
    assert metrics.router_snapshot()["alias"]["a"].cooling_down
    assert names(book.order(router)) == ["b", "a"]  # cooled down: last resort only
    clock.now += 29.9
    assert names(book.order(router)) == ["b", "a"]
    clock.now += 0.2
    assert names(book.order(router)) == ["a", "b"]  # back after T seconds


def test_router_route_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="strategy"):
        RouterRoute("x", "random", (RouterMember("a"),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="member"):
        RouterRoute("x", "priority", ())
    with pytest.raises(ValueError):
        RouterRoute("x", "priority", (RouterMember("a"),), cooldown_failures=0)


def test_fail_over_plan_members_then_fallbacks_never_a_router_twice() -> None:
    book, table, _, _ = make_book(("a", 1), ("b", 1), ("c", 1), ("gone", 0))
    other = RouterRoute("other", "priority", (RouterMember("c"),), fallbacks=("alias",))
    table.set_router(other)
    router = RouterRoute("alias", "priority", (RouterMember("gone"), RouterMember("a"), RouterMember("b")),
                        retries=1, fallbacks=("other", "b"))
    plan = [(c.route.name, c.member_of.name if c.member_of else None, c.last) for c in book.candidates(router)]
    # retries=1: two members (the one without replicas is not in the order); then `other`'s member
    # (its fallback back to `alias` is not followed: last), then the service `b` named as a fallback.
    assert plan == [("a", "alias", False), ("b", "alias", False), ("c", "other", True), ("b", None, True)]
