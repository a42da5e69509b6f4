"""The routing table: what the gateway serves, written by the controller, read by the proxy.

Routes are immutable values; the controller replaces a whole route when anything changes, so the
proxy never sees a half-updated service. The table lives on the gateway's event loop: the
controller calls it from the same loop (it runs in the same process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from gpustack_iac.runtime.gateway.ratelimit import RateLimitRule

RouterStrategy = Literal["priority", "weighted", "least-busy", "latency", "cost"]
ROUTER_STRATEGIES: tuple[str, ...] = ("priority", "weighted", "least-busy", "latency", "cost")


@dataclass(frozen=True)
class Upstream:
    replica_id: str
    group: str
    url: str  # "http://127.0.0.1:PORT"


@dataclass(frozen=True)
class ServiceRoute:
    name: str
    auth: bool
    model: str | None  # OpenAI model name served, if any
    model_prefix: str = "/v1"
    upstreams: tuple[Upstream, ...] = ()
    min_replicas_zero: bool = False  # the gateway holds requests while a replica starts
    rate_limits: tuple[RateLimitRule, ...] = ()  # the service's `rate_limits`


@dataclass(frozen=True)
class RouterMember:
    service: str  # a service name in the same table
    weight: float = 1.0  # `weighted`
    priority: int = 0  # `priority`: lower is tried first; declaration order breaks ties
    cost: float = 0.0  # `cost`: price per request (any unit, compared between members)
    # `cost`: a member has headroom while its in-flight requests per ready replica stay below this.
    max_in_flight_per_replica: int | None = None


@dataclass(frozen=True)
class RouterRoute:
    name: str  # the OpenAI model alias clients ask for
    strategy: RouterStrategy
    members: tuple[RouterMember, ...]
    auth: bool = True
    fallbacks: tuple[str, ...] = ()  # other aliases (routers or service models) tried when every member failed
    retries: int = 1  # further members tried after the first failed, before the first byte
    cooldown_failures: int = 3  # consecutive failures that cool a member down
    cooldown_seconds: float = 30.0
    ewma_alpha: float = 0.3  # `latency`: weight of the newest time-to-first-byte sample

    def __post_init__(self) -> None:
        if self.strategy not in ROUTER_STRATEGIES:
            raise ValueError(f"router {self.name!r}: unknown strategy {self.strategy!r}; expected one of {ROUTER_STRATEGIES}")
        if not self.members:
            raise ValueError(f"router {self.name!r}: needs at least one member")
        if self.retries < 0 or self.cooldown_failures < 1 or self.cooldown_seconds < 0:
            raise ValueError(f"router {self.name!r}: retries >= 0, cooldown_failures >= 1, cooldown_seconds >= 0")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError(f"router {self.name!r}: ewma_alpha must be in (0, 1]")


ModelTarget = ServiceRoute | RouterRoute


@dataclass
class RoutingTable:
    """Services and router aliases by name; listeners hear of every change (the hold queue uses that)."""

    _services: dict[str, ServiceRoute] = field(default_factory=dict)
    _routers: dict[str, RouterRoute] = field(default_factory=dict)
    _demand_callbacks: list[Callable[[str], None]] = field(default_factory=list)
    _listeners: list[Callable[[str], None]] = field(default_factory=list)

    # --- written by the controller -------------------------------------------------------------
    def set_service(self, route: ServiceRoute) -> None:
        self._services[route.name] = route
        self._changed(route.name)

    def remove_service(self, name: str) -> None:
        if self._services.pop(name, None) is not None:
            self._changed(name)

    def set_router(self, router: RouterRoute) -> None:
        self._routers[router.name] = router
        self._changed(router.name)

    def remove_router(self, name: str) -> None:
        if self._routers.pop(name, None) is not None:
            self._changed(name)

    def on_demand(self, callback: Callable[[str], None]) -> None:
        """`callback(service)` runs when a request waits for a replica of a scaled-to-zero service."""
        self._demand_callbacks.append(callback)

    # --- read by the proxy ---------------------------------------------------------------------
    def service(self, name: str) -> ServiceRoute | None:
        return self._services.get(name)

    def router(self, name: str) -> RouterRoute | None:
        return self._routers.get(name)

    def services(self) -> tuple[ServiceRoute, ...]:
        return tuple(self._services.values())

    def routers(self) -> tuple[RouterRoute, ...]:
        return tuple(self._routers.values())

    def by_model(self, model: str) -> ModelTarget | None:
        """A router alias wins over a service declaring the same model name: the alias is the explicit choice."""
        router = self._routers.get(model)
        if router is not None:
            return router
        for route in self._services.values():
            if route.model == model:
                return route
        return None

    def has_open_model(self) -> bool:
        """True when some model or router alias is served without a token (`auth: false`)."""
        return any(r.model is not None and not r.auth for r in self._services.values()) or any(
            not r.auth for r in self._routers.values()
        )

    def models(self) -> list[tuple[str, bool]]:
        """(model id, auth) for every served model and router alias, sorted by id."""
        found: dict[str, bool] = {}
        for route in self._services.values():
            if route.model is not None:
                found[route.model] = route.auth
        for router in self._routers.values():
            found[router.name] = router.auth
        return sorted(found.items())

    def demand(self, service: str) -> None:
        for callback in list(self._demand_callbacks):
            callback(service)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self, name: str) -> None:
        for listener in list(self._listeners):
            listener(name)
