"""The autoscaler's inputs: scaling rules, replica groups, load samples and tuning knobs."""

from __future__ import annotations

from dataclasses import dataclass

from gpustack_iac.errors import ScalingConfigError


@dataclass(frozen=True)
class ScalingConfig:
    """A service's (or a group's) `scaling:` block.

    `target` is the per-replica value of `metric` the autoscaler aims for ("rps": requests per
    second per replica). `in_flight_target` is the concurrent requests one replica should carry;
    None reads `target` as that number too (Little's law for requests of about one second), which
    suits short completions; set it explicitly for long streaming requests.
    """

    metric: str
    target: float
    scale_up_delay: float = 300.0
    scale_down_delay: float = 600.0
    in_flight_target: float | None = None

    def __post_init__(self) -> None:
        if self.target <= 0:
            raise ScalingConfigError(f"scaling.target must be > 0, got {self.target}")
        if self.in_flight_target is not None and self.in_flight_target <= 0:
            raise ScalingConfigError(f"scaling.in_flight_target must be > 0, got {self.in_flight_target}")
        if self.scale_up_delay < 0 or self.scale_down_delay < 0:
            raise ScalingConfigError("scaling.scale_up_delay and scale_down_delay must be >= 0")


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
    """One snapshot of the gateway's counters for a service (Metrics.snapshot())."""

    at: float
    requests_total: int  # cumulative, counted when a request arrives
    in_flight: int  # gauge
    waiting: int  # gauge: requests held while the service has no ready replica


@dataclass(frozen=True)
class Tuning:
    """Knobs of the decision loop that are not part of the YAML `scaling:` block.

    The stable window smooths noise; the panic window (Knative's idea) reacts to bursts. When the
    panic window asks for at least `panic_threshold` times the ready replicas, the autoscaler
    panics for one stable window: it scales up using `panic_scale_up_delay` instead of the
    configured `scale_up_delay`, and never scales down. The stable path aims at
    `utilisation` x target per replica and changes nothing while the load stays within
    ±`tolerance` of that aim; the default 1/1.1 puts the band's top edge exactly on the target,
    so the band absorbs noise without ever holding a replica above its target (1.0 centres the
    band on the target itself, as the reference words it, and accepts up to 10% above it).

    Capacity the panic path added is burst capacity: it is released `burst_release_delay`
    seconds after the panic ends (once the stable window no longer needs it) instead of after
    the configured `scale_down_delay`, which keeps the cost of a short burst close to the
    burst itself. None holds burst capacity for the full `scale_down_delay` too.
    """

    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    panic_scale_up_delay: float = 0.0
    tolerance: float = 0.1
    utilisation: float = 1 / 1.1
    burst_release_delay: float | None = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.panic_window <= self.stable_window:
            raise ScalingConfigError("Tuning: need 0 < panic_window <= stable_window")
        if self.panic_threshold <= 1.0:
            raise ScalingConfigError("Tuning: panic_threshold must be > 1")
        if not 0 < self.utilisation <= 1:
            raise ScalingConfigError("Tuning: utilisation must be in (0, 1]")
        if not 0 <= self.tolerance < 1:
            raise ScalingConfigError("Tuning: tolerance must be in [0, 1)")
        if self.burst_release_delay is not None and self.burst_release_delay < 0:
            raise ScalingConfigError("Tuning: burst_release_delay must be >= 0")
        if self.panic_scale_up_delay < 0:
            raise ScalingConfigError("Tuning: panic_scale_up_delay must be >= 0")
