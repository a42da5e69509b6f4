"""Routers: which services one request to a model alias tries, in which order, and their health.

`RouterBook.candidates` is the fail-over plan: members in strategy order (healthy ones first,
cooled-down ones last, none without a ready replica), at most `retries + 1` of them, then the
fallback aliases (another router's candidates, or a service), never a router twice. The proxy
opens each candidate in turn before the first byte and reports each outcome back, so failures
cool a member down and time-to-first-byte feeds the `latency` strategy. Each strategy is one
small class so a new one is one class more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.routing import RouterMember, RouterRoute, RoutingTable, ServiceRoute

Clock = Callable[[], float]


@dataclass
class MemberHealth:
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    ttfb_ewma: float | None = None
    current_weight: float = 0.0  # smooth weighted round-robin state


@dataclass(frozen=True)
class MemberView:
    """What a strategy may look at for one member."""

    member: RouterMember
    health: MemberHealth
    in_flight: int
    ready_replicas: int


class Strategy(Protocol):
    def order(self, views: list[MemberView]) -> list[MemberView]: ...


class Priority:
    """Lowest `priority` first (declaration order breaks ties); the rest are fail-over, in order."""

    def order(self, views: list[MemberView]) -> list[MemberView]:
        return sorted(views, key=lambda v: v.member.priority)


class Weighted:
    """Smooth weighted round-robin (deterministic; no member gets a burst of consecutive picks)."""

    def order(self, views: list[MemberView]) -> list[MemberView]:
        if not views:
            return []
        total = sum(max(v.member.weight, 0.0) for v in views)
        for v in views:
            v.health.current_weight += max(v.member.weight, 0.0)
        chosen = max(views, key=lambda v: v.health.current_weight)
        chosen.health.current_weight -= total
        rest = sorted((v for v in views if v is not chosen), key=lambda v: -v.member.weight)
        return [chosen, *rest]


class LeastBusy:
    """Fewest requests in flight per ready replica; declaration order breaks ties."""

    def order(self, views: list[MemberView]) -> list[MemberView]:
        return sorted(views, key=lambda v: v.in_flight / max(v.ready_replicas, 1))


class Latency:
    """Lowest EWMA of time to first byte; a member with no sample yet goes first so it gets measured."""

    def order(self, views: list[MemberView]) -> list[MemberView]:
        return sorted(views, key=lambda v: -1.0 if v.health.ttfb_ewma is None else v.health.ttfb_ewma)


class Cost:
    """Cheapest member that has headroom; members at their limit follow, cheapest first."""

    def order(self, views: list[MemberView]) -> list[MemberView]:
        def saturated(v: MemberView) -> bool:
            limit = v.member.max_in_flight_per_replica
            return limit is not None and v.in_flight >= limit * max(v.ready_replicas, 1)

        return sorted(views, key=lambda v: (saturated(v), v.member.cost))


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "priority": Priority,
    "weighted": Weighted,
    "least-busy": LeastBusy,
    "latency": Latency,
    "cost": Cost,
}


@dataclass(frozen=True)
class Candidate:
    """One service to try for a router request."""

    route: ServiceRoute
    member_of: RouterRoute | None  # the router it is a member of; None for a fallback alias naming a service
    last: bool  # nothing would be tried after it: a retryable status (502, 503) is relayed, not retried


@dataclass
class RouterBook:
    """Health of every router member, shared by all requests of one gateway."""

    table: RoutingTable
    metrics: Metrics
    clock: Clock = time.monotonic
    _health: dict[tuple[str, str], MemberHealth] = field(default_factory=dict)
    _strategies: dict[str, Strategy] = field(default_factory=dict)

    def order(self, router: RouterRoute) -> list[RouterMember]:
        """Members to try, best first: healthy ones by strategy, then cooled-down ones as a last resort.

        A member whose service has no ready replica is left out: there is nothing to try there.
        """
        now = self.clock()
        healthy: list[MemberView] = []
        cooling: list[MemberView] = []
        for member in router.members:
            route = self.table.service(member.service)
            if route is None or not route.upstreams:
                continue
            health = self._get(router.name, member.service)
            view = MemberView(member, health, self.metrics.member_in_flight(router.name, member.service), len(route.upstreams))
            (cooling if health.cooldown_until > now else healthy).append(view)
        strategy = self._strategy(router)
        return [v.member for v in strategy.order(healthy)] + [v.member for v in Priority().order(cooling)]

    def candidates(
        self, router: RouterRoute, members: list[RouterMember] | None = None, visited: frozenset[str] = frozenset()
    ) -> Iterator[Candidate]:
        """The fail-over plan, lazily: a fallback router's members are ordered only when reached.

        `members` is this router's `order()` when the caller already has it (it may have waited for
        a member to scale up from zero); ordering again would advance weighted round-robin twice.
        """
        visited = visited | {router.name}
        tried = (self.order(router) if members is None else members)[: router.retries + 1]
        fallbacks = [alias for alias in router.fallbacks if alias not in visited]
        for index, member in enumerate(tried):
            route = self.table.service(member.service)
            if route is None or not route.upstreams:
                continue
            yield Candidate(route, router, last=index == len(tried) - 1 and not fallbacks)
        for alias in fallbacks:
            target = self.table.by_model(alias)
            if isinstance(target, RouterRoute) and target.name not in visited:
                yield from self.candidates(target, visited=visited)
            elif isinstance(target, ServiceRoute) and target.upstreams:
                yield Candidate(target, None, last=True)

    def is_cooling(self, router: str, member: str) -> bool:
        return self._get(router, member).cooldown_until > self.clock()

    def succeeded(self, router: RouterRoute, member: str, ttfb_seconds: float) -> None:
        h = self._get(router.name, member)
        h.consecutive_failures = 0
        h.cooldown_until = 0.0
        a = router.ewma_alpha
        h.ttfb_ewma = ttfb_seconds if h.ttfb_ewma is None else a * ttfb_seconds + (1 - a) * h.ttfb_ewma
        self.metrics.member_health(router.name, member, h.ttfb_ewma, False)

    def failed(self, router: RouterRoute, member: str) -> None:
        h = self._get(router.name, member)
        h.consecutive_failures += 1
        if h.consecutive_failures >= router.cooldown_failures:
            # Counting restarts after a cooldown, so a member that is still broken when it comes
            # back is cooled down again after another N failures.
            h.cooldown_until = self.clock() + router.cooldown_seconds
            h.consecutive_failures = 0
        self.metrics.member_health(router.name, member, h.ttfb_ewma, h.cooldown_until > self.clock())

    def health(self, router: str, member: str) -> MemberHealth:
        return self._get(router, member)

    def _get(self, router: str, member: str) -> MemberHealth:
        h = self._health.get((router, member))
        if h is None:
            h = self._health[(router, member)] = MemberHealth()
        return h

    def _strategy(self, router: RouterRoute) -> Strategy:
        # One instance per router name; a changed strategy gets a fresh instance.
        key = f"{router.name}\0{router.strategy}"
        strategy = self._strategies.get(key)
        if strategy is None:
            strategy = self._strategies[key] = STRATEGIES[router.strategy]()
        return strategy
