"""Sizing node groups: how many nodes (or pods) a group should have, and the protocol that sets it.

The autoscaler decides replicas; when the joined hosts cannot hold them, the fleet's node groups
must grow. A node group is a cloud scaling group (an AWS Auto Scaling group, runtime/scaling/aws.py)
or, on Kubernetes, a replica group's Deployment (runtime/scaling/kubernetes.py). The decisions
here are pure functions; runtime/controller/node_sizing.py feeds them the controller's state and
calls a `NodeGroupScaler`. Scale-in never lowers a group's size directly (the cloud would pick
which instance dies, maybe a busy one): the controller picks a node idle for the group's
`idle_duration`, drains it, and asks the cloud to terminate *that* instance and decrement the
size (`CloudGroupScaler.remove_node`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class NodeGroupScaler(Protocol):
    """Reads and sets the desired size of named node groups."""

    async def get_size(self, name: str) -> int: ...

    async def set_size(self, name: str, size: int) -> int: ...

    async def close(self) -> None:
        """Release connections (the controller is stopping)."""
        ...


class CloudGroupScaler(NodeGroupScaler, Protocol):
    """A VM cloud's scaling groups, which can also lose one named instance (scale-in)."""

    async def remove_node(self, name: str, instance: str) -> int:
        """Terminate `instance` of group `name` and lower the group's size by one; the new size."""
        ...

    async def launch_errors(self, name: str) -> list[str]:
        """The cloud's messages for launches of group `name` that failed since the last call."""
        ...


@dataclass(frozen=True)
class NodeGroupSpec:
    """One node group as the stack declared it: its fleet, `nodes: min..max`, what one node has."""

    name: str
    fleet: str
    min: int
    max: int
    gpus: int = 0  # per node
    labels: Mapping[str, str] = field(default_factory=dict)  # what its agents register with (backend, region, spot)
    idle_duration: float | None = None  # seconds a node above `min` may stay without replicas; None: kept


@dataclass(frozen=True)
class Demand:
    """Replicas the controller could not place, and how many of them one node of each group holds."""

    replicas: int
    slots: Mapping[str, int]  # node group -> replicas per node; absent or 0: that group cannot host them


def nodes_for(replicas: int, slots: int) -> int:
    """Nodes that hold `replicas` at `slots` per node."""
    return -(-replicas // slots) if replicas > 0 else 0


def slots_per_node(spec: NodeGroupSpec, gpus_per_replica: int) -> int:
    """Replicas of a group one node holds, by GPUs (CPU-only replicas: one per node)."""
    if gpus_per_replica <= 0:
        return 1
    return spec.gpus // gpus_per_replica


def grow_sizes(specs: Sequence[NodeGroupSpec], sizes: Mapping[str, int], joined: Mapping[str, int],
               demands: Sequence[Demand], stalled: frozenset[str] = frozenset()) -> dict[str, int]:
    """New desired sizes for the groups that must grow, within each group's min..max.

    Nodes already asked for but not joined yet (size - joined) count first, so a tick while
    instances boot does not ask again; then groups grow in `specs` order (the stack lists the
    cheaper one, spot, first). A `stalled` group (nodes asked for that never arrived within the
    bound: no spot capacity) neither counts its missing nodes nor grows, so the demand falls
    through to the next group (on-demand)."""
    current = {s.name: min(max(sizes.get(s.name, s.min), s.min), s.max) for s in specs}
    booting = {s.name: 0 if s.name in stalled else max(current[s.name] - joined.get(s.name, 0), 0) for s in specs}
    new = dict(current)
    for demand in demands:
        need = demand.replicas
        for s in specs:
            slots = demand.slots.get(s.name, 0)
            if need <= 0:
                break
            if slots <= 0 or s.name in stalled:
                continue
            use = min(booting[s.name], nodes_for(need, slots))
            booting[s.name] -= use
            need -= use * slots
            add = min(nodes_for(need, slots), s.max - new[s.name]) if need > 0 else 0
            if add > 0:
                new[s.name] += add
                need -= add * slots
    return {name: size for name, size in new.items() if size != sizes.get(name)}


def short_since(previous: Mapping[str, float], sizes: Mapping[str, int], joined: Mapping[str, int],
                now: float) -> dict[str, float]:
    """Since when each group has had fewer joined nodes than its size (nodes asked for, not arrived)."""
    return {name: previous.get(name, now) for name, size in sizes.items() if size > joined.get(name, 0)}


def deployment_sizes(wanted: Mapping[str, int], sizes: Mapping[str, int | None]) -> dict[str, int]:
    """Kubernetes: a replica group is a Deployment and each replica a pod, so a Deployment's size
    is the autoscaler's count; only the ones that differ from what was last set are returned."""
    return {name: n for name, n in wanted.items() if sizes.get(name) != n}


@dataclass(frozen=True)
class IdleNode:
    """A joined node without replicas: its agent (the instance's name), its group, since when."""

    agent: str
    group: str
    since: float


def idle_victims(specs: Sequence[NodeGroupSpec], sizes: Mapping[str, int], idle: Sequence[IdleNode],
                 now: float, busy: frozenset[str] = frozenset()) -> list[IdleNode]:
    """The idle nodes to remove now: idle for at least their group's `idle_duration`, longest idle
    first, never taking a group below its `min`. A `busy` group (replicas wait for a host it could
    give) keeps its nodes: growth and scale-in never fight over the same group."""
    out: list[IdleNode] = []
    for s in specs:
        if s.idle_duration is None or s.name in busy:
            continue
        spare = sizes.get(s.name, s.min) - s.min
        due = sorted((n for n in idle if n.group == s.name and now - n.since >= s.idle_duration), key=lambda n: n.since)
        out.extend(due[:max(spare, 0)])
    return out


# What a cloud says when a launch fails for lack of capacity or quota, not for a bad request:
# the group cannot grow now, and the next group (another zone or region, or on-demand) must.
CAPACITY_CODES = ("InsufficientInstanceCapacity", "InsufficientCapacity", "ZONE_RESOURCE_POOL_EXHAUSTED",
                  "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "SkuNotAvailable", "ZonalAllocationFailed",
                  "AllocationFailed", "OverconstrainedAllocationRequest", "SpotMaxPriceTooLow")
QUOTA_CODES = ("VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded", "QUOTA_EXCEEDED",
               "QuotaExceeded", "OperationNotAllowed")


def capacity_error(message: str) -> str | None:
    """`capacity: CODE` or `quota: CODE` when `message` is a launch failure of that kind, else None."""
    for kind, codes in (("capacity", CAPACITY_CODES), ("quota", QUOTA_CODES)):
        # Longest first: ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS names itself, not its prefix.
        for code in sorted(codes, key=len, reverse=True):
            if code in message:
                return f"{kind}: {code}"
    return None
