"""Live records: what the controller knows right now of each agent, service and replica.

Rebuilt from the store (store.py) and the agents' listings on start; `core.py` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gpustack_iac.runtime.autoscaler import ServiceAutoscaler
from gpustack_iac.runtime.controller.model import ServiceDef
from gpustack_iac.runtime.controller.placement import HostFacts
from gpustack_iac.runtime.controller.rollout import RolloutReport
from gpustack_iac.runtime.controller.store import AgentRecord, PlacementRecord

# Agent replica states that mean the process is not serving and will not by itself (the agent
# may restart it with back-off, but the controller replaces it rather than wait).
CRASHED_STATES = frozenset({"restarting", "exited", "failed", "stopped"})


@dataclass
class AgentState:
    record: AgentRecord
    host: HostFacts | None = None
    healthy: bool = False
    error: str = ""
    listing: dict[str, dict[str, Any]] | None = None  # the last successful GET /v1/replicas, by id
    host_checked_at: float = float("-inf")
    down_since: float | None = None  # the controller's clock when it stopped answering
    lost: bool = False  # down past agent_lost_after: its replicas were placed elsewhere


class ReplicaStatus(str, Enum):
    """Where a replica is in its life, as the controller sees it (one value, derived in one place)."""

    PENDING = "pending"  # placed; its agent has not listed it yet
    STARTING = "starting"  # its process runs; not ready (yet, or any more)
    READY = "ready"  # probed ready and routed
    FAILED = "failed"  # crashed, failed liveness or never got ready: to be replaced
    STOPPING = "stopping"  # out of routing: draining, then stopped


@dataclass
class ReplicaState:
    record: PlacementRecord
    url: str | None = None
    pid: int | None = None
    agent_state: str = "pending"  # until the agent lists it
    restarts: int = 0
    exit_code: int | None = None
    ready: bool = False
    probe_failures: int = 0
    next_probe_at: float = 0.0
    detail: str = ""
    failed: bool = False  # crashed or failed liveness: to be replaced
    stopping: bool = False  # removed from routing; drain and stop in progress
    created_mono: float = 0.0  # the controller's clock when placed (or when re-adopted)

    @property
    def id(self) -> str:
        return self.record.replica_id

    @property
    def routable(self) -> bool:
        return self.ready and not self.failed and not self.stopping and self.url is not None

    @property
    def status(self) -> ReplicaStatus:
        if self.stopping:
            return ReplicaStatus.STOPPING
        if self.failed:
            return ReplicaStatus.FAILED
        if self.routable:
            return ReplicaStatus.READY
        return ReplicaStatus.PENDING if self.agent_state in ("pending", "adopting") else ReplicaStatus.STARTING


@dataclass
class GroupState:
    """What the controller remembers of one replica group between ticks."""

    desired: int | None = None  # the replicas it wants now (fixed count or the autoscaler's)
    rollout: RolloutReport | None = None  # the last rollout of the group, shown by status
    failed_generation: str | None = None  # a generation whose rollout failed
    new_failures: int = 0  # failed replicas of the rolling generation
    message: str | None = None  # why it lacks replicas
    no_capacity: bool = False  # the last placement found no host
    capacity: str | None = None  # node groups that could not grow for it, and the cloud's reason
    no_capacity_streak: int = 0  # placements in a row that found no host
    crash_streak: int = 0  # replicas replaced in a row after crashing
    backoff_until: float = 0.0  # no new start before (crash loops, no capacity)
    last_failure: float = float("-inf")  # clock of its last replaced replica
    last_failed: tuple[str, str] | None = None  # (replica id, agent): its log explains a crash loop


@dataclass
class ServiceState:
    definition: ServiceDef
    previous: ServiceDef | None = None
    groups: dict[str, GroupState] = field(default_factory=dict)  # by group name; see group()
    error: str | None = None  # why the last tick of the service failed (e.g. a scaling rule refused)
    demand: bool = False  # a request waits at the gateway for a first replica
    autoscaler: ServiceAutoscaler | None = None  # built when a group has a replica range
    autoscaler_key: tuple[Any, ...] = ()

    def group(self, name: str) -> GroupState:
        """The state of group `name`, created empty the first time it is asked for."""
        return self.groups.setdefault(name, GroupState())

    def desired(self, name: str, default: int = 0) -> int:
        desired = self.group(name).desired
        return default if desired is None else desired

    @property
    def no_capacity(self) -> set[str]:
        return {name for name, g in self.groups.items() if g.no_capacity}

    def rollout_json(self) -> dict[str, Any]:
        return {
            "groups": {name: g.rollout.to_json() for name, g in self.groups.items() if g.rollout is not None},
            "failed_generation": {name: g.failed_generation for name, g in self.groups.items() if g.failed_generation},
        }

    def restore_rollouts(self, saved: dict[str, Any]) -> None:
        """The inverse of rollout_json, from the store."""
        for name, report in saved.get("groups", {}).items():
            self.group(name).rollout = RolloutReport(**report)
        for name, generation in saved.get("failed_generation", {}).items():
            self.group(name).failed_generation = generation
