"""Live records: what the controller knows right now of each agent, service and replica.

Rebuilt from the store (store.py) and the agents' listings on start; `core.py` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class ServiceState:
    definition: ServiceDef
    previous: ServiceDef | None = None
    rollouts: dict[str, RolloutReport] = field(default_factory=dict)
    failed_generation: dict[str, str] = field(default_factory=dict)  # group -> generation whose rollout failed
    new_failures: dict[str, int] = field(default_factory=dict)  # group -> failed replicas of the rolling generation
    messages: dict[str, str] = field(default_factory=dict)  # group -> why it lacks replicas
    no_capacity: set[str] = field(default_factory=set)
    desired: dict[str, int] = field(default_factory=dict)
    backoff_until: dict[str, float] = field(default_factory=dict)  # group -> no new start before (crash loops)
    crash_streak: dict[str, int] = field(default_factory=dict)
    no_capacity_streak: dict[str, int] = field(default_factory=dict)  # group -> placements in a row that found no host
    last_failure: dict[str, float] = field(default_factory=dict)  # group -> clock of its last replaced replica
    last_failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # group -> (replica id, agent): its log explains a crash loop
    demand: bool = False  # a request waits at the gateway for a first replica
    autoscaler: ServiceAutoscaler | None = None  # built when a group has a replica range
    autoscaler_key: tuple[Any, ...] = ()

    def rollout_json(self) -> dict[str, Any]:
        return {
            "groups": {g: r.to_json() for g, r in self.rollouts.items()},
            "failed_generation": dict(self.failed_generation),
        }
