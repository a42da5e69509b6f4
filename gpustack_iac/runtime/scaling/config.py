"""The autoscaler's inputs: scaling rules, replica groups, load samples and tuning knobs."""

from __future__ import annotations

from dataclasses import dataclass

from gpustack_iac.contract import scaling as defaults
from gpustack_iac.contract.scaling import METRICS, ScalingConfig, ScheduleEntry
from gpustack_iac.errors import ScalingConfigError

# The scaling settings themselves live in contract/scaling.py (one class for every layer).
__all__ = ["METRICS", "GroupConfig", "LoadSample", "ScalingConfig", "ScheduleEntry", "Tuning"]


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

    stable_window: float = defaults.WINDOW
    panic_window: float = defaults.BURST_WINDOW
    panic_scale_up_delay: float = 0.0
    tolerance: float = 0.1
    burst_release_delay: float | None = defaults.BURST_RELEASE

    def __post_init__(self) -> None:
        if not 0 < self.panic_window <= self.stable_window:
            raise ScalingConfigError("Tuning: need 0 < panic_window <= stable_window")
        if not 0 <= self.tolerance < 1:
            raise ScalingConfigError("Tuning: tolerance must be in [0, 1)")
        if self.burst_release_delay is not None and self.burst_release_delay < 0:
            raise ScalingConfigError("Tuning: burst_release_delay must be >= 0")
        if self.panic_scale_up_delay < 0:
            raise ScalingConfigError("Tuning: panic_scale_up_delay must be >= 0")
