"""Per-service autoscaler: target tracking over replica groups, with a panic path for bursts.

The controller feeds it the gateway's load snapshots (`observe`) and asks, on every control
tick, how many replicas each group should have (`decide`). Everything is pure logic driven by
an injected clock; docs/autoscaling.md explains the rules and the defaults.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from gpustack_iac.errors import ScalingConfigError
from gpustack_iac.runtime.scaling.config import GroupConfig, LoadSample, ScalingConfig, Tuning
from gpustack_iac.runtime.scaling.metrics import InFlightMetric, Metric, RpsMetric, default_metrics
from gpustack_iac.runtime.scaling.policy import ResolvedGroup, capacity, clamp, spill, spread
from gpustack_iac.runtime.scaling.window import LoadWindow

__all__ = [
    "GroupConfig",
    "InFlightMetric",
    "LoadSample",
    "Metric",
    "RpsMetric",
    "ScalingConfig",
    "ServiceAutoscaler",
    "Tuning",
]


class ServiceAutoscaler:
    """Desired replicas per group for one service.

    `decide` returns, per group, the count the controller should converge to. A group in
    `no_capacity` keeps its count (the controller keeps trying to place it) while its missing
    replicas are added to the next groups that can grow.
    """

    def __init__(
        self,
        groups: list[GroupConfig],
        scaling: ScalingConfig | None,
        clock: Callable[[], float] = time.monotonic,
        metrics: Sequence[Metric] | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self._clock = clock
        self._metrics: tuple[Metric, ...] = tuple(metrics) if metrics is not None else default_metrics()
        self._tuning = tuning or Tuning()
        self._window = LoadWindow(self._tuning.stable_window)
        self._created = clock()
        self._alloc: dict[str, int] | None = None
        self._last_event: dict[str, float] = {}
        self._panic_until: float | None = None
        self._recovering: set[str] = set()
        # Groups holding burst capacity, with their count before the burst: whatever a panic added
        # (and any stable scale-up while it lasts) is released on the short burst delay.
        self._burst: dict[str, int] = {}
        # (time, recommendation per group): a scale-down goes only as low as the highest
        # recommendation of the last stable window, so a brief dip in a busy hour removes nothing.
        self._history: deque[tuple[float, dict[str, int]]] = deque()
        self._groups: tuple[ResolvedGroup, ...] = ()
        self.reconfigure(groups, scaling)

    # --- inputs ----------------------------------------------------------------------------------
    def reconfigure(self, groups: list[GroupConfig], scaling: ScalingConfig | None) -> None:
        """Apply a changed replica range or scaling in place, keeping the load history."""
        if not groups:
            raise ScalingConfigError("a service needs at least one replica group")
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ScalingConfigError(f"replica group names must be unique: {names}")
        for g in groups:
            if g.min != g.max and (g.scaling or scaling) is None:
                raise ScalingConfigError(f"group {g.name!r}: a replica range {g.min}..{g.max} needs scaling")
        self._groups = tuple(ResolvedGroup(g, g.scaling or scaling) for g in groups)
        if self._alloc is not None:
            self._alloc = {g.name: clamp(self._alloc.get(g.name, g.config.min), g.config) for g in self._groups}

    def observe(self, sample: LoadSample) -> None:
        self._window.observe(sample)

    @property
    def panicking(self) -> bool:
        return self._panic_until is not None and self._clock() < self._panic_until

    # --- decision ----------------------------------------------------------------------------------
    def decide(self, ready: dict[str, int], no_capacity: set[str]) -> dict[str, int]:
        now = self._clock()
        if self._alloc is None:
            # Start from what runs, so a restarted controller does not bounce healthy replicas.
            self._alloc = {g.name: clamp(ready.get(g.name, 0), g.config) for g in self._groups}
        current = self._alloc
        t = self._tuning
        ready_total = sum(ready.get(g.name, 0) for g in self._groups)
        starting = sum(current.values()) > ready_total
        metrics = [m for m in self._metrics if m.leading or not starting]
        leading = [m for m in self._metrics if m.leading]
        stable = {m.name: m.load(self._window, t.stable_window, now) for m in metrics}
        panic = {m.name: m.load(self._window, t.panic_window, now) for m in leading}
        stable_fill = spread(stable, self._groups, metrics)
        # The stable path aims at utilisation x target: the band around the aim then ends at the
        # target itself, so holding inside the band never means running above target.
        aim_fill = spread({k: v / t.utilisation for k, v in stable.items()}, self._groups, metrics)
        panic_fill = spread(panic, self._groups, leading)
        self._remember(now, aim_fill)
        leading_fill = spread({m.name: stable[m.name] for m in leading}, self._groups, leading)

        if sum(panic_fill.values()) >= t.panic_threshold * max(ready_total, 1) and sum(panic_fill.values()) > sum(
            current.values()
        ):
            self._panic_until = now + t.stable_window
        in_panic = self._panic_until is not None and now < self._panic_until

        if sum(current.values()) == 0:
            target = self._from_zero(stable_fill, panic_fill)
            new = target if target is not None else dict(current)
        elif in_panic:
            target = {g.name: max(panic_fill[g.name], leading_fill[g.name], current[g.name]) for g in self._groups}
            new = self._gate(current, target, now, panic=True)
        elif self._within_tolerance(stable, current, metrics):
            new = dict(current)
        else:
            new = self._gate(current, aim_fill, now, panic=False)

        for name, n in new.items():
            if n != current[name]:
                self._last_event[name] = now
                if n > current[name] and in_panic:
                    self._burst.setdefault(name, current[name])
                elif n <= self._burst.get(name, -1):
                    del self._burst[name]
        self._alloc = new
        return self._spill(new, ready, no_capacity)

    def _from_zero(self, stable_fill: dict[str, int], panic_fill: dict[str, int]) -> dict[str, int] | None:
        """Scale up from zero at once when a request arrives, runs or waits; None = stay at zero."""
        if not self._window.demand_now() and sum(stable_fill.values()) == 0:
            return None
        target = {g.name: max(stable_fill[g.name], panic_fill[g.name]) for g in self._groups}
        if sum(target.values()) == 0:
            first = next((g for g in self._groups if g.config.max > 0), None)
            if first is not None:
                target[first.name] = 1
        return target

    def _within_tolerance(self, loads: Mapping[str, float], alloc: Mapping[str, int], metrics: Sequence[Metric]) -> bool:
        """No change while the busiest metric sits within ±tolerance of its aim."""
        ratios = []
        for m in metrics:
            cap = capacity(alloc, self._groups, m)
            if cap > 0:
                ratios.append(loads[m.name] / cap)
        if not ratios:
            return True
        busiest = max(ratios) / self._tuning.utilisation
        return 1 - self._tuning.tolerance <= busiest <= 1 + self._tuning.tolerance

    def _gate(self, current: dict[str, int], target: dict[str, int], now: float, panic: bool) -> dict[str, int]:
        """Apply each group's scale-up / scale-down delay, measured from its last scaling event."""
        out = dict(current)
        going_to_zero = sum(target.values()) == 0
        for g in self._groups:
            cur, want = current[g.name], target[g.name]
            scaling = g.scaling
            last = self._last_event.get(g.name)
            if want > cur:
                delay = self._tuning.panic_scale_up_delay if panic else (scaling.scale_up_delay if scaling else 0.0)
                if last is None or now - last >= delay:
                    out[g.name] = want
            elif want < cur:
                delay = scaling.scale_down_delay if scaling else 0.0
                since = now - (last if last is not None else self._created)
                release = self._tuning.burst_release_delay
                if g.name in self._burst and release is not None and self._panic_until is not None:
                    # Measured from the panic's end, not from partial releases: burst capacity
                    # follows the stable window down instead of a staircase of delays.
                    delay, since = release, now - self._panic_until
                if since < delay:
                    continue
                if going_to_zero:
                    # Zero is decided on traffic itself: no request for the whole delay.
                    if not self._quiet_for(delay, now):
                        continue
                else:
                    want = max(want, self._highest_since(g.name, now - min(delay, self._tuning.stable_window)))
                    if want >= cur:
                        continue
                out[g.name] = want
        return out

    def _remember(self, now: float, recommendation: dict[str, int]) -> None:
        self._history.append((now, recommendation))
        keep = self._tuning.stable_window
        while self._history and self._history[0][0] < now - keep:
            self._history.popleft()

    def _highest_since(self, group: str, start: float) -> int:
        return max((rec.get(group, 0) for at, rec in self._history if at >= start), default=0)

    def _quiet_for(self, seconds: float, now: float) -> bool:
        seen = self._window.last_activity_at
        return seen is None or now - seen >= seconds

    def _spill(self, desired: dict[str, int], ready: dict[str, int], no_capacity: set[str]) -> dict[str, int]:
        names = {g.name for g in self._groups}
        self._recovering |= no_capacity & names
        # A group that got capacity back keeps spilling until its own replicas are ready again.
        self._recovering = {
            n for n in self._recovering if n in no_capacity or ready.get(n, 0) < desired.get(n, 0)
        }
        return spill(desired, ready, set(self._recovering), self._groups, self._metrics)
