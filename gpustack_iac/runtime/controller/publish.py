"""What the controller hands to the gateway's routing table: each service's ready replicas, and routers.

Routes are published only when they differ from the last ones, so an unchanged tick does not
touch the gateway's table.
"""

from __future__ import annotations

from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.model import RateLimitDef, RouterDef, ServiceDefinitionError
from gpustack_iac.runtime.gateway.ratelimit import RateLimitRule
from gpustack_iac.runtime.gateway.routing import (
    RouterMember,
    RouterRoute,
    ServiceRoute,
    Upstream,
)


def publish_routes(core: ControllerCore) -> None:
    for name, st in core.services.items():
        d = st.definition
        ready = [r for r in core.replicas.values() if r.record.service == name and r.routable]
        ups = tuple(Upstream(r.id, r.record.group, r.url or "") for r in sorted(ready, key=lambda r: r.id))
        route = ServiceRoute(
            name=name,
            auth=d.auth,
            model=d.model.name if d.model else None,
            model_prefix=d.model.prefix if d.model else "/v1",
            upstreams=ups,
            min_replicas_zero=sum(g.replicas.min for g in d.groups) == 0,
            rate_limits=tuple(rate_limit_rule(limit) for limit in d.rate_limits),
        )
        if core.published.get(name) != route:
            core.table.set_service(route)
            core.published[name] = route


def rate_limit_rule(limit: RateLimitDef) -> RateLimitRule:
    header = limit.key.header if limit.key.type == "header" else None
    return RateLimitRule(prefix=limit.prefix, rps=limit.rps, burst=limit.burst, header=header)


def router_route(router: RouterDef) -> RouterRoute:
    """The gateway's view of a router registration; ServiceDefinitionError when it refuses it."""
    try:
        return RouterRoute(
            name=router.name,
            strategy=router.strategy,  # type: ignore[arg-type]  # a str: RouterRoute checks it against ROUTER_STRATEGIES
            members=tuple(
                RouterMember(
                    service=m.service,
                    weight=m.weight,
                    priority=m.priority,
                    cost=m.cost if m.cost is not None else 0.0,
                    max_in_flight_per_replica=m.max_in_flight_per_replica,
                )
                for m in router.members
            ),
            auth=router.auth,
            fallbacks=router.fallbacks,
            retries=router.retries,
            cooldown_failures=router.cooldown_failures,
            cooldown_seconds=router.cooldown_seconds,
            ewma_alpha=router.ewma_alpha,
        )
    except ValueError as exc:
        raise ServiceDefinitionError(f"invalid router definition: {exc}") from exc
