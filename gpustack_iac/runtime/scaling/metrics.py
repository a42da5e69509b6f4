"""Load metrics the autoscaler tracks. Adding one (queue depth, latency) is one class here.

A metric measures the service's load over a period and says how much of that load one replica
of a group should carry; the group policy turns the pair into replicas. The autoscaler sizes
for the largest answer across metrics.
"""

from __future__ import annotations

from typing import Protocol

from gpustack_iac.runtime.scaling.config import ScalingConfig
from gpustack_iac.runtime.scaling.window import LoadWindow


class Metric(Protocol):
    name: str
    # A leading metric measures arrivals, i.e. demand itself, so the panic window may act on it.
    # A lagging one (concurrency) also grows while capacity is short and queues build, so it acts
    # only through the stable window and only while no replica is starting: otherwise the queue
    # that waits for those replicas would be read as demand for yet more.
    leading: bool

    def load(self, window: LoadWindow, period: float, now: float) -> float:
        """The service's load over the last `period` seconds, in this metric's unit."""
        ...

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        """Load one replica should carry under `scaling`; None when this metric does not apply."""
        ...


class RpsMetric:
    """Requests per second (the configuration's `metric: rps`)."""

    name = "rps"
    leading = True

    def load(self, window: LoadWindow, period: float, now: float) -> float:
        return window.rate(period, now)

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        return scaling.target if scaling.metric == "rps" else None


class InFlightMetric:
    """Concurrent requests: catches slow requests piling up while the request rate looks fine."""

    name = "in_flight"
    leading = False

    def load(self, window: LoadWindow, period: float, now: float) -> float:
        return window.mean_in_flight(period, now)

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        if scaling.in_flight_target is not None:
            return scaling.in_flight_target
        return scaling.target


def default_metrics() -> tuple[Metric, ...]:
    return (RpsMetric(), InFlightMetric())
