"""The autoscaler's inputs: scaling rules, replica groups, load samples and tuning knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from croniter import croniter

from gpustack_iac.errors import ScalingConfigError

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
    scale_up_delay: float = 300.0
    scale_down_delay: float = 600.0
    in_flight_target: float | None = None
    window: float | None = None
    burst_window: float | None = None
    burst_sigmas: float | None = 3.0
    burst_release: float | None = None
    headroom_z: float = 1.0
    headroom_budget: float = 0.2
    schedule: tuple[ScheduleEntry, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ScalingConfigError(f"scaling.metric must be one of {list(METRICS[:4])}, got {self.metric!r}")
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


@dataclass(frozen=True)
class GroupConfig:
    """One replica group, in the service's declared order (first = base, later = overflow)."""

    name: str
    min: int
    max: int
    scaling: ScalingConfig | None  # overrides the service's scaling for this group

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ScalingConfigError(f"group {self.name!r}: need 0 <= min <= max, got {self.min}..{self.max}")

    @property
    def fixed(self) -> bool:
        return self.min == self.max


@dataclass(frozen=True)
class LoadSample:
    """One snapshot of the gateway's counters for a service (Metrics.snapshot()).

    `in_flight` counts every request the gateway has accepted and not answered, held ones
    included; `waiting` counts the held ones alone. `ttfb_buckets` are cumulative counts of
    times to first byte per bucket of `TTFB_BUCKETS` (gateway/metrics.py), one more for overflow.
    """

    at: float
    requests_total: int  # cumulative, counted when a request arrives
    in_flight: int  # gauge
    waiting: int  # gauge: requests held while the service has no ready replica
    ttfb_buckets: tuple[int, ...] = ()


@dataclass(frozen=True)
class Tuning:
    """Knobs of the decision loop that the YAML `scaling:` block does not set (or defaults).

    `stable_window`, `panic_window` and `burst_release_delay` are the defaults of the block's
    `window`, `burst.window` and `burst.release`. The stable path changes nothing while the
    busiest metric stays between `1 - tolerance` of the next smaller allocation and the current
    one: a scale-down needs the load to fit comfortably in fewer replicas, so noise around a
    boundary does not flap. `panic_scale_up_delay` spaces successive burst steps (0: at once).
    """

    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_scale_up_delay: float = 0.0
    tolerance: float = 0.1
    burst_release_delay: float | None = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.panic_window <= self.stable_window:
            raise ScalingConfigError("Tuning: need 0 < panic_window <= stable_window")
        if not 0 <= self.tolerance < 1:
            raise ScalingConfigError("Tuning: tolerance must be in [0, 1)")
        if self.burst_release_delay is not None and self.burst_release_delay < 0:
            raise ScalingConfigError("Tuning: burst_release_delay must be >= 0")
        if self.panic_scale_up_delay < 0:
            raise ScalingConfigError("Tuning: panic_scale_up_delay must be >= 0")
