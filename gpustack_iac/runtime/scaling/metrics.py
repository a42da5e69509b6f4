"""Load metrics the autoscaler tracks; each is one class.

A metric measures the service's load over a period and says how much of that load one replica
of a group should carry; the group policy turns the pair into replicas. The autoscaler sizes
for the largest answer across metrics. A metric applies to a group only when its
`per_replica` answers (usually: when the group's `scaling.metric` names it).
"""

from __future__ import annotations

from typing import Protocol

from gpustack_iac.runtime.scaling.config import ScalingConfig
from gpustack_iac.runtime.scaling.window import LoadWindow

# Bucket bounds (seconds) of the gateway's time-to-first-byte histogram: about 12% apart from
# 1 ms to 2 min, so a p90 read from it is within a few percent of the true one.
TTFB_BUCKETS: tuple[float, ...] = tuple(round(0.001 * 1.12**i, 6) for i in range(104))


class Metric(Protocol):
    name: str
    # A leading metric measures arrivals, i.e. demand itself, so the burst path may act on it.
    # A lagging one (concurrency, latency, queue) also grows while capacity is short, so it acts
    # only through the stable window and only while no replica is starting: otherwise the
    # queue that waits for those replicas would be read as demand for yet more.
    leading: bool

    def load(self, window: LoadWindow, period: float, now: float, replicas: int) -> float:
        """The service's load over the last `period` seconds, in this metric's unit.

        `replicas` is the number of ready replicas the load was measured on.
        """
        ...

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        """Load one replica should carry under `scaling`; None when this metric does not apply."""
        ...


class RpsMetric:
    """Requests per second (`metric: rps`)."""

    name = "rps"
    leading = True

    def load(self, window: LoadWindow, period: float, now: float, replicas: int) -> float:
        return window.rate(period, now)

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        return scaling.target if scaling.kind == "rps" else None


class ConcurrencyMetric:
    """Requests in flight on the replicas (`metric: concurrency`), held requests left out.

    Under `metric: rps` it is an opt-in safety net for slow requests piling up while the rate
    looks fine, with `in_flight_target` per replica. It is off by default there: requests that
    queue on replicas still starting would read as demand for yet more of them.
    """

    name = "concurrency"
    leading = False

    def load(self, window: LoadWindow, period: float, now: float, replicas: int) -> float:
        return window.mean_running(period, now)

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        if scaling.kind == "concurrency":
            return scaling.target
        if scaling.kind == "rps":
            return scaling.in_flight_target
        return None


class LatencyMetric:
    """p90 time to first byte measured by the gateway, `target` in milliseconds (`metric: latency`).

    Latency does not add up over replicas, so the load is expressed the way Kubernetes' HPA does
    for such metrics: replicas x observed / target, i.e. `replicas x p90` against `target` per
    replica. No request in the period means no reading (load 0).
    """

    name = "latency"
    leading = False
    quantile = 0.9

    def load(self, window: LoadWindow, period: float, now: float, replicas: int) -> float:
        p = window.quantile(self.quantile, TTFB_BUCKETS, period, now)
        if p is None:
            return 0.0
        return max(replicas, 1) * p * 1000.0

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        return scaling.target if scaling.kind == "latency" else None


class QueueMetric:
    """Requests held at the gateway (`metric: queue`), `target` per replica."""

    name = "queue"
    leading = False

    def load(self, window: LoadWindow, period: float, now: float, replicas: int) -> float:
        return window.mean_waiting(period, now)

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        return scaling.target if scaling.kind == "queue" else None


# The older name of the concurrency metric, kept for callers that import it.
InFlightMetric = ConcurrencyMetric


def default_metrics() -> tuple[Metric, ...]:
    return (RpsMetric(), ConcurrencyMetric(), LatencyMetric(), QueueMetric())
