"""The controller's timing and retry knobs: tick interval, probe and startup limits, drain and stop grace.

Not part of the YAML schema; the gateway process builds them from its command line (or tests pass
shorter ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack_iac.runtime.scaling.config import Tuning


@dataclass(frozen=True)
class ControllerSettings:
    interval: float = 1.0  # seconds between reconcile ticks (a change wakes the loop at once)
    probe_interval: float = 1.0  # when the service's probe does not say
    probe_failures: int = 3  # failed liveness probes in a row before a ready replica is replaced
    startup_deadline: float = 120.0  # a new replica must be ready within this (rollout failure past it)
    drain_seconds: float = 2.0  # a replica leaves routing this long before it gets SIGTERM
    stop_grace: float = 10.0  # SIGTERM to SIGKILL, passed to the agent
    host_refresh: float = 30.0  # seconds between GET /v1/host of a healthy agent
    max_backoff: float = 30.0  # ceiling of the delay between replacements in a crash loop
    agent_timeout: float = 5.0  # seconds for one agent call (listing, stop); start and host take longer
    agent_lost_after: float = 15.0  # an agent unreachable this long has its replicas placed elsewhere
    orphan_retries: int = 120  # attempts to stop a deleted service's replica on an unreachable agent
    orphan_retry_interval: float = 5.0
    tuning: Tuning = field(default_factory=Tuning)  # the autoscaler's windows (not part of the YAML)
