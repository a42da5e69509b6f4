"""The scaling settings: one class, one set of defaults, for every layer.

The YAML model (spec/models.py `ScalingSpec`) takes its defaults from here, the service definition
the controller parses carries a `ScalingConfig` per service and group, and the autoscaler decides
with it. A value out of range raises ScalingConfigError (a ValueError too, so a definition parsed
with pydantic reports it at its path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from croniter import croniter

from gpustack_iac.errors import ScalingConfigError

# Defaults of the `scaling:` block (seconds; sigmas; fractions).
SCALE_UP_DELAY: float = 300
SCALE_DOWN_DELAY: float = 600
WINDOW = 60.0  # `window`: the stable path's averaging window
BURST_WINDOW = 6.0  # `burst.window`
BURST_SIGMAS = 3.0  # `burst.sigmas`
BURST_RELEASE = 60.0  # `burst.release`
HEADROOM_Z = 1.0
HEADROOM_BUDGET = 0.2

# `in_flight` is the name older definitions used for `concurrency`.
METRICS = ("rps", "concurrency", "latency", "queue", "in_flight")


@dataclass(frozen=True)
class ScheduleEntry:
    """A minimum replica count during every minute a cron expression (UTC) matches."""

    cron: str
    min: int

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron) or len(self.cron.split()) != 5:
            raise ScalingConfigError(f"scaling.schedule: {self.cron!r} is not a 5-field cron expression")
        if self.min < 0:
            raise ScalingConfigError(f"scaling.schedule: min must be >= 0, got {self.min}")


@dataclass(frozen=True)
class ScalingConfig:
    """A service's (or a group's) `scaling:` block.

    `target` is the per-replica value of `metric` the autoscaler aims for: "rps" requests per
    second, "concurrency" requests in flight, "latency" the p90 time to first byte in
    milliseconds, "queue" requests held at the gateway. `in_flight_target` is the opt-in safety net
    of the rps metric (concurrent requests one replica should carry; None: no safety net).
    Fields left None take the controller's `Tuning` defaults.

    Headroom: the stable path provisions for `mean + headroom_z x sigma` of the per-second
    arrivals, but never more than `headroom_budget` x the replicas the mean needs (rounded
    down) on top of them: the cost budget. Bursts: a short window of `burst_window` seconds
    whose count is more than `burst_sigmas` standard deviations above what the current
    capacity serves is a burst; `burst_sigmas` None switches the burst path off.
    """

    metric: str
    target: float
    scale_up_delay: float = SCALE_UP_DELAY
    scale_down_delay: float = SCALE_DOWN_DELAY
    in_flight_target: float | None = None
    window: float | None = None
    burst_window: float | None = None
    burst_sigmas: float | None = BURST_SIGMAS
    burst_release: float | None = None
    headroom_z: float = HEADROOM_Z
    headroom_budget: float = HEADROOM_BUDGET
    schedule: tuple[ScheduleEntry, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ScalingConfigError(f"scaling.metric: expected one of {list(METRICS[:4])}, got {self.metric!r}")
        if self.target <= 0:
            raise ScalingConfigError(f"scaling.target must be > 0, got {self.target}")
        if self.in_flight_target is not None and self.in_flight_target <= 0:
            raise ScalingConfigError(f"scaling.in_flight_target must be > 0, got {self.in_flight_target}")
        if self.scale_up_delay < 0 or self.scale_down_delay < 0:
            raise ScalingConfigError("scaling.scale_up_delay and scale_down_delay must be >= 0")
        for name in ("window", "burst_window"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ScalingConfigError(f"scaling.{name} must be > 0, got {value}")
        if self.burst_sigmas is not None and self.burst_sigmas <= 0:
            raise ScalingConfigError(f"scaling.burst_sigmas must be > 0, got {self.burst_sigmas}")
        if self.burst_release is not None and self.burst_release < 0:
            raise ScalingConfigError(f"scaling.burst_release must be >= 0, got {self.burst_release}")
        if self.headroom_z < 0 or self.headroom_budget < 0:
            raise ScalingConfigError("scaling.headroom z and budget must be >= 0")

    @property
    def kind(self) -> str:
        return "concurrency" if self.metric == "in_flight" else self.metric
