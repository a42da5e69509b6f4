"""Group policy: spread a service's load over its replica groups in declared order.

The first group is the base, later groups take overflow; each group stays inside its own
min..max, so scaling down empties the last groups first. Groups may carry different per-replica
targets (a group's own `scaling`), which is why the spread works on load, not on replica counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpustack_iac.runtime.scaling.config import GroupConfig, ScalingConfig
from gpustack_iac.runtime.scaling.metrics import Metric

# Loads below this are measurement noise, not a request (keeps float residue from adding a replica).
EPSILON = 1e-9


@dataclass(frozen=True)
class ResolvedGroup:
    """A group with the scaling that applies to it (its own, else the service's)."""

    config: GroupConfig
    scaling: ScalingConfig | None

    @property
    def name(self) -> str:
        return self.config.name

    def capacity(self, metric: Metric) -> float | None:
        return metric.per_replica(self.scaling) if self.scaling is not None else None


def clamp(value: int, group: GroupConfig) -> int:
    return max(group.min, min(group.max, value))


def spread(loads: Mapping[str, float], groups: Sequence[ResolvedGroup], metrics: Sequence[Metric]) -> dict[str, int]:
    """Replicas per group that carry `loads` (metric name -> load), filling groups in order."""
    remaining = {m.name: max(0.0, loads.get(m.name, 0.0)) for m in metrics}
    out: dict[str, int] = {}
    for group in groups:
        need = 0
        for metric in metrics:
            cap = group.capacity(metric)
            left = remaining[metric.name]
            if cap and left > EPSILON:
                need = max(need, math.ceil(left / cap - EPSILON))
        n = clamp(need, group.config)
        out[group.name] = n
        for metric in metrics:
            cap = group.capacity(metric)
            if cap:
                remaining[metric.name] = max(0.0, remaining[metric.name] - n * cap)
    return out


def capacity(alloc: Mapping[str, int], groups: Sequence[ResolvedGroup], metric: Metric) -> float:
    """Load of `metric` that the allocation carries at target."""
    return sum(alloc.get(g.name, 0) * (g.capacity(metric) or 0.0) for g in groups)


def unit_capacity(group: ResolvedGroup, metrics: Sequence[Metric]) -> float:
    """One replica's capacity on the first metric that applies, to convert replicas across groups."""
    for metric in metrics:
        cap = group.capacity(metric)
        if cap:
            return cap
    return 1.0


def spill(
    desired: Mapping[str, int],
    ready: Mapping[str, int],
    short: set[str],
    groups: Sequence[ResolvedGroup],
    metrics: Sequence[Metric],
) -> dict[str, int]:
    """Move the shortfall of groups that cannot get capacity onto the next eligible groups.

    A short group keeps its desired count (so the controller keeps trying to place it); what it
    lacks beyond its ready replicas is carried, as load, to later groups that can grow, then
    wraps around to earlier ones. Once the group is ready again the carry vanishes and the
    overflow shrinks back: that is the move back.
    """
    out = dict(desired)
    carry = 0.0
    for group in groups:
        if group.name in short:
            missing = max(0, desired.get(group.name, 0) - ready.get(group.name, 0))
            carry += missing * unit_capacity(group, metrics)
    if carry <= EPSILON:
        return out
    first_short = next(i for i, g in enumerate(groups) if g.name in short)
    order = list(groups[first_short + 1 :]) + list(groups[:first_short])
    for group in order:
        if carry <= EPSILON:
            break
        if group.name in short:
            continue
        unit = unit_capacity(group, metrics)
        room = group.config.max - out[group.name]
        extra = min(room, math.ceil(carry / unit - EPSILON))
        if extra > 0:
            out[group.name] += extra
            carry = max(0.0, carry - extra * unit)
    return out
