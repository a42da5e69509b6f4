"""Per-service autoscaler: target tracking with noise headroom, a burst path and schedules.

The controller feeds it the gateway's load snapshots (`observe`) and asks, on every control
tick, how many replicas each group should have (`decide`). Everything is pure logic driven by
injected clocks; docs/autoscaling.md explains the rules and the defaults.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone

from croniter import croniter

from gpustack_iac.errors import ScalingConfigError
from gpustack_iac.runtime.scaling.config import GroupConfig, LoadSample, ScalingConfig, ScheduleEntry, Tuning
from gpustack_iac.runtime.scaling.metrics import (
    ConcurrencyMetric,
    InFlightMetric,
    LatencyMetric,
    Metric,
    QueueMetric,
    RpsMetric,
    default_metrics,
)
from gpustack_iac.runtime.scaling.policy import ResolvedGroup, capacity, clamp, spill, spread
from gpustack_iac.runtime.scaling.window import LoadWindow

__all__ = [
    "ConcurrencyMetric",
    "GroupConfig",
    "InFlightMetric",
    "LatencyMetric",
    "LoadSample",
    "Metric",
    "QueueMetric",
    "RpsMetric",
    "ScalingConfig",
    "ScheduleEntry",
    "ServiceAutoscaler",
    "Tuning",
]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


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
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._metrics: tuple[Metric, ...] = tuple(metrics) if metrics is not None else default_metrics()
        self._tuning = tuning or Tuning()
        self._window = LoadWindow(self._tuning.stable_window)
        self._created = clock()
        self._alloc: dict[str, int] | None = None
        self._last_event: dict[str, float] = {}
        self._panic_until: float | None = None
        self._recovering: set[str] = set()
        # Groups holding burst capacity, with their count before the burst: whatever the burst
        # path added (and any stable scale-up while it lasts) is released on the burst delay.
        self._burst: dict[str, int] = {}
        # (when, seconds): how long after a burst ended the next one came, for the last three
        # returns within the longest hold. A busy period that returns within minutes keeps its
        # capacity over the gap instead of a release and restart.
        self._returns: deque[tuple[float, float]] = deque(maxlen=3)
        self._busy_last: float | None = None  # last tick that needed burst capacity
        self._lows: deque[tuple[float, float]] = deque()  # (time, long-window rate), rates increasing
        self._busy_need: dict[str, int] = {}  # what the busy period's rate needs
        self._busy_start: tuple[float, int] | None = None  # (time, requests_total) the busy period began at
        # (time, recommendation per group): a scale-down goes only as low as the highest
        # recommendation of the last stable window, so a brief dip in a busy hour removes nothing.
        self._history: deque[tuple[float, dict[str, int]]] = deque()
        self._groups: tuple[ResolvedGroup, ...] = ()
        self._service_scaling: ScalingConfig | None = None
        self._main: ScalingConfig | None = None
        self._schedule_minute: datetime | None = None
        self._schedule_cache: dict[tuple[ScheduleEntry, ...], int] = {}
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
        self._service_scaling = scaling
        # Windows, burst and headroom are per service: the service's block, else the first group's.
        self._main = scaling or next((g.scaling for g in groups if g.scaling is not None), None)
        self._window.resize(self.window)
        if self._alloc is not None:
            self._alloc = {g.name: clamp(self._alloc.get(g.name, g.config.min), g.config) for g in self._groups}

    def observe(self, sample: LoadSample) -> None:
        self._window.observe(sample)

    @property
    def panicking(self) -> bool:
        return self._panic_until is not None and self._clock() < self._panic_until

    @property
    def window(self) -> float:
        w = self._main.window if self._main is not None else None
        return w if w is not None else self._tuning.stable_window

    @property
    def burst_window(self) -> float:
        w = self._main.burst_window if self._main is not None else None
        return min(w if w is not None else self._tuning.panic_window, self.window)

    @property
    def burst_release(self) -> float | None:
        r = self._main.burst_release if self._main is not None else None
        return r if r is not None else self._tuning.burst_release_delay

    # --- decision ----------------------------------------------------------------------------------
    def decide(self, ready: dict[str, int], no_capacity: set[str]) -> dict[str, int]:
        now = self._clock()
        if self._alloc is None:
            # Start from what runs, so a restarted controller does not bounce healthy replicas.
            self._alloc = {g.name: clamp(ready.get(g.name, 0), g.config) for g in self._groups}
        current = self._alloc
        cur_total = sum(current.values())
        ready_total = sum(ready.get(g.name, 0) for g in self._groups)
        starting = cur_total > ready_total
        metrics = [m for m in self._metrics if m.leading or not starting]
        loads = {m.name: m.load(self._window, self.window, now, ready_total) for m in metrics}
        aim = self._aim(loads, metrics, 1.0, now)
        self._remember(now, aim)

        burst = self._burst_fill(current if cur_total else self._one_replica(), now)
        if burst is not None and sum(burst.values()) > cur_total:
            self._panic_until = now + self.window
        in_panic = self._panic_until is not None and now < self._panic_until

        if cur_total == 0:
            new = self._from_zero(aim, burst) or dict(current)
        elif in_panic:
            target = {g.name: max(aim[g.name], (burst or aim)[g.name], current[g.name]) for g in self._groups}
            new = self._gate(current, target, now, panic=True)
        elif self._window.span() < self.window / 2:
            # A rate over a few seconds of history is noise, not a trend: only the burst path and
            # the scale-up from zero act until the window is half full (e.g. after a restart).
            new = dict(current)
        else:
            # Hysteresis: up as soon as the aim exceeds the allocation, down only to what carries
            # the load with `tolerance` to spare, so noise around a boundary does not flap.
            relaxed = self._aim(loads, metrics, 1 / (1 - self._tuning.tolerance), now)
            target = {}
            for g in self._groups:
                cur = current[g.name]
                target[g.name] = aim[g.name] if aim[g.name] > cur else min(cur, relaxed[g.name])
            new = self._gate(current, target, now, panic=False)

        # The floor goes first: holding it is no scaling event, only a change of count is.
        new = self._floor(new)
        for name, n in new.items():
            if n != current[name]:
                self._last_event[name] = now
                if n > current[name] and in_panic:
                    self._burst.setdefault(name, current[name])
                elif n <= self._burst.get(name, -1):
                    del self._burst[name]
        self._alloc = new
        self._track_busy(now)
        return self._spill(new, ready, no_capacity)

    def _aim(self, loads: Mapping[str, float], metrics: Sequence[Metric], scale: float, now: float) -> dict[str, int]:
        """Replicas per group for the loads (times `scale`), with headroom for arrival noise.

        Poisson-like arrivals at rate L exceed L + z x sqrt(var) in a second with a small,
        known probability, so the rps load is sized at that level; the extra replicas are capped
        at `headroom_budget` x the replicas the mean needs (rounded down): the cost budget.
        """
        scaled = {k: v * scale for k, v in loads.items()}
        base = spread(scaled, self._groups, metrics)
        main = self._main
        if main is None or main.headroom_z <= 0 or "rps" not in scaled:
            return base
        sigma = math.sqrt(max(0.0, self._window.variance(self._noise_period(now), now)))
        noisy = spread({**scaled, "rps": scaled["rps"] + main.headroom_z * sigma * scale}, self._groups, metrics)
        allowed = math.floor(main.headroom_budget * sum(base.values()) + 1e-9)
        extra = {g.name: noisy[g.name] - base[g.name] for g in self._groups}
        over = sum(extra.values()) - allowed
        for g in reversed(self._groups):  # trim the overflow groups' headroom first
            if over <= 0:
                break
            cut = min(over, extra[g.name])
            extra[g.name] -= cut
            over -= cut
        return {g.name: base[g.name] + extra[g.name] for g in self._groups}

    def _noise_period(self, now: float) -> float:
        """The window, or the time since the rate changed inside it.

        A step up or down makes the sample-to-sample counts vary by the step's size; read as
        noise it asked for headroom replicas that became ready after a flash crowd had ended.
        The latest change counts: a window holding one busy period's end and the next one's start
        finds the older, better-supported step first, and the variance since it, read across the
        new step, kept a headroom replica through the whole next busy period.
        """
        period = self.window
        for _ in range(4):  # each pass looks only after the change the one before found
            changed = self._window.change_at(period, now)
            if changed is None or now - changed >= period:
                break
            period = now - changed
        return period

    def _short_need(self, now: float) -> dict[str, int]:
        """Replicas per group the burst window's rate needs (step-aware); zeros without rps."""
        rps = next((m for m in self._metrics if m.name == "rps" and m.leading), None)
        if rps is None or self._main is None:
            return {g.name: 0 for g in self._groups}
        rate, _ = self._window.step_rate(self.burst_window, now)
        return spread({"rps": rate}, self._groups, [rps])

    def _release_hold(self, release: float, cap: float, now: float) -> float:
        """Seconds burst capacity is held after the burst: longer when bursts keep coming back.

        Sized from the longest of the last three gaps between a burst's end and the next one
        (within six `cap`s), plus a fifth; gaps longer than `cap` (the group's scale-down
        delay) say nothing, since holding that long is what the normal path does anyway.
        """
        recent = [gap for at, gap in self._returns if now - at <= 6 * cap and gap <= cap]
        if not recent:
            return release
        return min(cap, max(release, 1.2 * max(recent)))

    def _burst_fill(self, alloc: Mapping[str, int], now: float) -> dict[str, int] | None:
        """Replicas for the burst window's rate when its count is significantly above capacity.

        At capacity C rps the count in w seconds is about Poisson(C x w): a burst is a count
        beyond C x w + k x sqrt(C x w) (k = `burst_sigmas`), which noise alone reaches about
        once in 700 windows at k = 3. None when there is no burst.
        """
        main = self._main
        if main is None or main.burst_sigmas is None:
            return None
        rps = next((m for m in self._metrics if m.name == "rps" and m.leading), None)
        if rps is None:
            return None
        w = self.burst_window
        count, _ = self._window.arrivals(w, now)
        if not self._above(alloc, rps, main.burst_sigmas, now):
            return None
        # Sized on the rate since the step began when the window holds one: a 25x flash crowd
        # one second old gets its capacity in one launch, not diluted by the quiet seconds before.
        rate, _ = self._window.step_rate(w, now)
        return spread({"rps": max(count / w, rate)}, self._groups, [rps])

    def _above(self, alloc: Mapping[str, int], rps: Metric, sigmas: float, now: float) -> bool:
        """Whether the burst window's count is more than `sigmas` deviations above `alloc`'s capacity."""
        w = self.burst_window
        count, _ = self._window.arrivals(w, now)
        expected = capacity(alloc, self._groups, rps) * w
        return expected > 0 and count > expected + sigmas * math.sqrt(expected)

    def _track_busy(self, now: float) -> None:
        """Note each tick that still needs burst capacity, and each busy period that came back.

        Busy: the burst window's count is a burst (the test that starts one) against what the
        quiet level needs, the lowest long-window rate of the last `scale_down_delay`. A busy
        period is busy to its end however long it lasts, while load that stays up becomes the
        quiet level and stops being busy. A busy tick after at least a burst window without one
        is a return, and its gap sizes the release hold.
        """
        main = self._main
        rps = next((m for m in self._metrics if m.name == "rps" and m.leading), None)
        if main is None or main.burst_sigmas is None or rps is None:
            return
        quiet = self._quiet_rate(now, main.scale_down_delay)
        if not self._burst:
            return
        base = spread({"rps": quiet}, self._groups, [rps])
        if not self._above(base if sum(base.values()) else self._one_replica(), rps, main.burst_sigmas, now):
            return
        latest = self._window.latest
        total = latest.requests_total if latest is not None else 0
        if self._busy_last is not None and now - self._busy_last >= self.burst_window:
            gap = now - self._busy_last
            # Only returns within the longest hold are remembered: a lull longer than that says
            # nothing about the hold, and three of them in a row took every slot, so a period
            # after them was released at the bare `burst.release` although busy periods had been
            # coming back within minutes (the returns older than six holds are forgotten anyway).
            if gap <= max(self.burst_release or 0.0, main.scale_down_delay):
                self._returns.append((now, gap))
            self._busy_start = None
        if self._busy_start is None:
            self._busy_start = (now, total)
        self._busy_last = now
        # What the busy period's mean rate needs (the burst window's until it is that long): the
        # hold keeps this, not the peaks of per-second noise.
        began, at_start = self._busy_start
        if now - began >= self.burst_window:
            self._busy_need = spread({"rps": (total - at_start) / (now - began)}, self._groups, [rps])
        else:
            # A period shorter than the burst window: its need only grows. The window's rate falls
            # as quiet seconds enter it after the period, and read then it held 2 of 5 replicas.
            short = self._short_need(now)
            prior = self._busy_need if began < now else {}
            self._busy_need = {name: max(n, prior.get(name, 0)) for name, n in short.items()}

    def _quiet_rate(self, now: float, horizon: float) -> float:
        """The lowest long-window rate of the last `horizon` seconds (a sliding minimum)."""
        rate = self._window.rate(self.window, now)
        lows = self._lows
        if self._window.span() >= self.window / 2:  # a few seconds of history are no level yet
            while lows and lows[-1][1] >= rate:
                lows.pop()
            lows.append((now, rate))
        while lows and lows[0][0] < now - horizon:
            lows.popleft()
        return lows[0][1] if lows else rate

    def _one_replica(self) -> dict[str, int]:
        out = {g.name: 0 for g in self._groups}
        first = next((g for g in self._groups if g.config.max > 0), None)
        if first is not None:
            out[first.name] = 1
        return out

    def _from_zero(self, aim: dict[str, int], burst: dict[str, int] | None) -> dict[str, int] | None:
        """Scale up from zero at once when a request arrives, runs or waits; None = stay at zero.

        Held requests count as demand once, through the rate at which they arrived: a queue of
        them starts one replica unless they arrived fast enough to need more.
        """
        if not self._window.demand_now() and sum(aim.values()) == 0:
            return None
        target = {g.name: max(aim[g.name], (burst or aim)[g.name]) for g in self._groups}
        if sum(target.values()) == 0:
            target = self._one_replica()
        return target

    def _gate(self, current: dict[str, int], target: dict[str, int], now: float, panic: bool) -> dict[str, int]:
        """Apply each group's scale-up / scale-down delay, measured from its last scaling event."""
        out = dict(current)
        going_to_zero = sum(target.values()) == 0
        # Never below what the burst window's rate needs: a release or stable scale-down that
        # looked at the long window alone removed replicas a new busy period needed, and the burst
        # path started them again a second later (6 -> 4 -> 7).
        short = self._short_need(now) if not panic else {}
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
                release = self.burst_release
                if g.name in self._burst and release is not None and self._panic_until is not None:
                    # Measured from the burst's end, not from partial releases: burst capacity
                    # follows the stable window down instead of a staircase of delays.
                    cap = max(release, scaling.scale_down_delay if scaling else release)
                    end = max(self._panic_until, self._busy_last or self._panic_until)
                    delay, since = self._release_hold(release, cap, now), now - end
                    if since < delay:
                        # The hold keeps what the busy period's rate needed, not the headroom above
                        # it: a returning period is met by the burst path, headroom follows.
                        kept = self._busy_need.get(g.name, cur)
                        if kept < cur and since >= self.burst_window:
                            out[g.name] = max(want, kept)
                        continue
                if since < delay:
                    continue
                if going_to_zero:
                    # Zero is decided on traffic itself: no request for the whole delay.
                    if not self._quiet_for(delay, now):
                        continue
                else:
                    want = max(want, short.get(g.name, 0), self._highest_since(g.name, now - min(delay, self.window)))
                    if want >= cur:
                        continue
                out[g.name] = want
        return out

    def _floor(self, alloc: dict[str, int]) -> dict[str, int]:
        """Raise the allocation to the minimums of the schedules that match this minute.

        The service's schedule is a floor on its total, filled in group order; a group's own
        schedule is a floor on that group. Holding a floor is not a scaling event: it does not
        delay the next scale-up.
        """
        minute = self._wall_clock().astimezone(timezone.utc).replace(second=0, microsecond=0, tzinfo=None)
        if self._schedule_minute != minute:
            # A cron match costs about a millisecond and the answer holds for the whole minute.
            self._schedule_minute, self._schedule_cache = minute, {}

        def scheduled(schedule: tuple[ScheduleEntry, ...]) -> int:
            if schedule not in self._schedule_cache:
                self._schedule_cache[schedule] = max((e.min for e in schedule if croniter.match(e.cron, minute)), default=0)
            return self._schedule_cache[schedule]

        out = dict(alloc)
        for g in self._groups:
            own = g.config.scaling
            if own is not None and own.schedule:
                out[g.name] = clamp(max(out[g.name], scheduled(own.schedule)), g.config)
        service = self._service_scaling
        if service is not None and service.schedule:
            missing = scheduled(service.schedule) - sum(out.values())
            for g in self._groups:
                if missing <= 0:
                    break
                room = g.config.max - out[g.name]
                add = min(room, missing)
                out[g.name] += add
                missing -= add
        return out

    def _remember(self, now: float, recommendation: dict[str, int]) -> None:
        self._history.append((now, recommendation))
        keep = self.window
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

