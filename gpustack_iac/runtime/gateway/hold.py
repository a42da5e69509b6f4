"""Scale from zero: hold a request while the controller starts the first replica of a service."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute


class HoldQueueFull(Exception):
    """More requests are already waiting for this service than the queue allows."""


@dataclass
class HoldQueue:
    """Bounded per-service waiting room, woken by the routing table when a route changes."""

    table: RoutingTable
    metrics: Metrics
    capacity: int
    timeout: float
    _waiters: dict[str, set[asyncio.Future[None]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.table.add_listener(self._on_change)

    def close(self) -> None:
        self.table.remove_listener(self._on_change)

    def waiting(self, service: str) -> int:
        return len(self._waiters.get(service, ()))

    async def wait_for_upstream(self, service: str) -> ServiceRoute | None:
        """The service's route once it has a ready upstream; None after the timeout or if the service went away.

        Raises HoldQueueFull at once when `capacity` requests already wait for this service.
        """
        waiters = self._waiters.setdefault(service, set())
        if len(waiters) >= self.capacity:
            raise HoldQueueFull(service)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        self.metrics.waiting_changed(service, 1)
        try:
            self.table.demand(service)
            while True:
                route = self.table.service(service)
                if route is None:
                    return None
                if route.upstreams:
                    return route
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                future: asyncio.Future[None] = loop.create_future()
                waiters.add(future)
                try:
                    await asyncio.wait_for(future, remaining)
                except asyncio.TimeoutError:
                    return None
                finally:
                    waiters.discard(future)
        finally:
            self.metrics.waiting_changed(service, -1)
            if not waiters:
                self._waiters.pop(service, None)

    def _on_change(self, name: str) -> None:
        for future in list(self._waiters.get(name, ())):
            if not future.done():
                future.set_result(None)
