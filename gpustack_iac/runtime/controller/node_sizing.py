"""Growing node groups when the joined hosts cannot hold the replicas the autoscaler wants.

Runs at the end of a reconcile tick. `NodeGroupSizer` (VM clouds) turns the groups marked "no
capacity" into demands on the fleet's node groups whose labels the group's placement accepts,
and asks the cloud for more nodes (runtime/scaling/nodegroups.py decides how many);
the new nodes' agents join by themselves (join.py) and the next ticks place the replicas.
`DeploymentSizer` (Kubernetes) sets each replica group's Deployment to the autoscaler's count.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.placement import label_mismatch
from gpustack_iac.runtime.scaling.nodegroups import (
    Demand,
    NodeGroupScaler,
    NodeGroupSpec,
    deployment_sizes,
    grow_sizes,
    short_since,
    slots_per_node,
)

log = logging.getLogger("gpustack_iac.controller.node_sizing")
# How long nodes asked of a group may take to join before the group counts as out of capacity (a
# spot group that never fills) and the next group (on-demand) grows instead: an instance boots and
# installs the runtime in a few minutes.
FALLBACK_AFTER = 600.0


class Sizer(Protocol):
    async def step(self, core: ControllerCore, now: float) -> None: ...


def demands(core: ControllerCore, specs: Sequence[NodeGroupSpec]) -> list[Demand]:
    """One demand per group that found no host: the replicas it is missing, and the node groups
    whose agents its placement would accept."""
    out: list[Demand] = []
    for st in core.services.values():
        for g in st.definition.groups:
            if not st.group(g.name).no_capacity or g.hosts:
                continue  # a group pinned to named hosts cannot use new nodes
            running = sum(1 for r in core.replicas.values()
                          if r.record.service == st.definition.name and r.record.group == g.name and not r.stopping)
            missing = st.desired(g.name) - running
            if missing <= 0:
                continue
            gpus = int(g.resources.gpu.count.min) if g.resources.gpu is not None else 0
            slots = {s.name: slots_per_node(s, gpus) for s in specs if label_mismatch(g.placement, s.labels) is None}
            out.append(Demand(missing, {k: v for k, v in slots.items() if v > 0}))
    return out


def joined(core: ControllerCore) -> dict[str, int]:
    """Healthy joined agents per node group."""
    counts: dict[str, int] = {}
    for a in core.agents.values():
        group = a.record.labels.get("node_group")
        if isinstance(group, str) and a.healthy:
            counts[group] = counts.get(group, 0) + 1
    return counts


class NodeGroupSizer:
    """Asks a cloud for more nodes, at most once per `interval` (instances take minutes to boot
    and join, and the decision already counts the ones on their way)."""

    def __init__(self, scaler: NodeGroupScaler, specs: Sequence[NodeGroupSpec], interval: float = 30.0,
                 fallback_after: float = FALLBACK_AFTER) -> None:
        self.scaler = scaler
        self.specs = tuple(specs)
        self.interval = interval
        self.fallback_after = fallback_after
        self._next = float("-inf")
        self._short: dict[str, float] = {}  # group -> since when its asked-for nodes have not all joined

    async def step(self, core: ControllerCore, now: float) -> None:
        if now < self._next:
            return
        wanted = demands(core, self.specs)
        if not wanted:
            return
        self._next = now + self.interval
        sizes = {s.name: await self.scaler.get_size(s.name) for s in self.specs}
        have = joined(core)
        self._short = short_since(self._short, sizes, have, now)
        stalled = frozenset(n for n, since in self._short.items() if now - since >= self.fallback_after)
        for name in sorted(stalled):
            log.warning("node group %s: %d of %d nodes joined after %.0f s; growing the next group instead",
                        name, have.get(name, 0), sizes[name], now - self._short[name])
        for name, size in grow_sizes(self.specs, sizes, have, wanted, stalled).items():
            log.info("node group %s: %d -> %d nodes (%d replicas without a host)",
                     name, sizes[name], size, sum(d.replicas for d in wanted))
            await self.scaler.set_size(name, size)
            # The bound runs from the group's first request still unfilled.
            self._short.setdefault(name, now)


class DeploymentSizer:
    """Kubernetes: keeps each replica group's Deployment at the autoscaler's count."""

    def __init__(self, scaler: NodeGroupScaler, deployments: Mapping[tuple[str, str], str]) -> None:
        self.scaler = scaler
        self.deployments = dict(deployments)  # (service, group) -> Deployment name
        self._set: dict[str, int | None] = {}

    async def step(self, core: ControllerCore, now: float) -> None:
        wanted: dict[str, int] = {}
        for (service, group), name in self.deployments.items():
            st = core.services.get(service)
            desired = st.group(group).desired if st is not None else None
            if desired is not None:
                wanted[name] = desired
        for name, size in deployment_sizes(wanted, self._set).items():
            self._set[name] = None  # asked again next tick if this call fails
            await self.scaler.set_size(name, size)
            self._set[name] = size
            log.info("deployment %s scaled to %d", name, size)


async def run_sizers(core: ControllerCore, sizers: Sequence[Sizer], now: float) -> None:
    for sizer in sizers:
        try:
            await sizer.step(core, now)
        except GpustackError as exc:
            # A cloud API outage must not stall the tick; the next one asks again.
            log.warning("node group sizing: %s", exc)
