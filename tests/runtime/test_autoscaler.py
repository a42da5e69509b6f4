"""The autoscaler and the group policy, driven by an injected clock (no sleeps, no processes).

Each scenario feeds the autoscaler the cumulative counters the gateway would report, one sample
per simulated second, and reads the desired replicas per group exactly as the controller does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpustack_iac.errors import ScalingConfigError
from gpustack_iac.runtime.autoscaler import (
    GroupConfig,
    InFlightMetric,
    LoadSample,
    Metric,
    RpsMetric,
    ScalingConfig,
    ScheduleEntry,
    ServiceAutoscaler,
    Tuning,
)
from gpustack_iac.runtime.scaling.window import LoadWindow

# Headroom off: these scenarios test the group policy and the delays on evenly spaced arrivals.
RPS10 = ScalingConfig("rps", target=10, scale_up_delay=30, scale_down_delay=120, headroom_z=0)


@dataclass
class Sim:
    """Clock, gateway counters and a cluster whose replicas are ready as soon as they are wanted."""

    scaler: ServiceAutoscaler
    clock: list[float]
    requests_total: int = 0
    ready: dict[str, int] = field(default_factory=dict)
    no_capacity: set[str] = field(default_factory=set)
    history: list[dict[str, int]] = field(default_factory=list)
    # When set, `ready` stays as the test sets it instead of following the decision.
    manual_ready: bool = False

    def run(self, seconds: int, rps: float, in_flight: int = 0, waiting: int = 0) -> dict[str, int]:
        decision: dict[str, int] = {}
        carry = 0.0
        for _ in range(seconds):
            self.clock[0] += 1.0
            carry += rps
            arrived = int(carry)
            carry -= arrived
            self.requests_total += arrived
            self.scaler.observe(LoadSample(self.clock[0], self.requests_total, in_flight, waiting))
            decision = self.scaler.decide(dict(self.ready), set(self.no_capacity))
            self.history.append(decision)
            if not self.manual_ready:
                self.ready = {
                    name: 0 if name in self.no_capacity else n for name, n in decision.items()
                }
        return decision

    def seen(self, group: str) -> set[int]:
        return {d[group] for d in self.history}


def make(
    groups: Iterable[GroupConfig],
    scaling: ScalingConfig | None = RPS10,
    tuning: Tuning | None = None,
    ready: dict[str, int] | None = None,
    metrics: tuple[Metric, ...] | None = None,
) -> Sim:
    clock = [1000.0]
    groups = list(groups)
    scaler = ServiceAutoscaler(groups, scaling, clock=lambda: clock[0], tuning=tuning, metrics=metrics)
    return Sim(scaler, clock, ready=dict(ready or {g.name: g.min for g in groups}))


def h100_rtx(scaling: ScalingConfig = RPS10, tuning: Tuning | None = None) -> Sim:
    """The discussion's setup: one H100 always on, 0..5 RTX 5090 on demand."""
    return make([GroupConfig("h100", 1, 1, None), GroupConfig("rtx5090", 0, 5, None)], scaling, tuning)


# --- base / overflow ------------------------------------------------------------------------------
def test_base_overflow_scales_overflow_up_and_back_while_base_stays() -> None:
    sim = h100_rtx()
    assert sim.run(30, rps=5) == {"h100": 1, "rtx5090": 0}
    up = sim.run(120, rps=35)
    # 35 rps at an aim of 10/1.1 per replica needs 4 replicas: the base plus 3 overflow.
    assert up == {"h100": 1, "rtx5090": 3}
    down = sim.run(400, rps=0)
    assert down == {"h100": 1, "rtx5090": 0}
    assert sim.seen("h100") == {1}


def test_overflow_stops_at_its_max() -> None:
    sim = h100_rtx()
    assert sim.run(90, rps=500) == {"h100": 1, "rtx5090": 5}


def test_load_fills_groups_in_order_and_scale_down_removes_overflow_first() -> None:
    sim = make([GroupConfig("a", 1, 3, None), GroupConfig("b", 0, 3, None)])
    assert sim.run(120, rps=55) == {"a": 3, "b": 3}
    # Half the load: the base keeps its three replicas, the overflow gives back.
    assert sim.run(400, rps=30) == {"a": 3, "b": 1}
    assert sim.run(400, rps=20) == {"a": 3, "b": 0}
    assert sim.run(400, rps=0) == {"a": 1, "b": 0}


def test_fixed_group_stays_fixed() -> None:
    sim = make([GroupConfig("fixed", 2, 2, None), GroupConfig("burst", 0, 4, None)])
    sim.run(100, rps=200)
    sim.run(600, rps=0)
    sim.run(60, rps=0.5)
    assert sim.seen("fixed") == {2}
    assert max(sim.seen("burst")) == 4


def test_group_scaling_overrides_the_service_target() -> None:
    small = ScalingConfig("rps", target=2, scale_up_delay=30, scale_down_delay=120)
    sim = make([GroupConfig("big", 1, 1, None), GroupConfig("small", 0, 10, small)])
    # The jump from idle is a burst, sized at target: the base carries 10 rps, the remaining
    # 12 rps need 6 small replicas at 2 rps each (the top of the band, so it is then held).
    assert sim.run(120, rps=22) == {"big": 1, "small": 6}
    # A later rise past the band is sized at the aim (2/1.1 per small replica): 1 x 10 + 8 x 2
    # carries the 26 rps at target.
    assert sim.run(120, rps=26) == {"big": 1, "small": 8}


# --- spill-over -------------------------------------------------------------------------------------
def test_group_without_capacity_spills_to_next_and_takes_it_back() -> None:
    sim = make([GroupConfig("h100", 1, 3, None), GroupConfig("rtx5090", 0, 5, None)])
    sim.run(120, rps=25)
    assert sim.history[-1] == {"h100": 3, "rtx5090": 0}

    # The H100 fleet loses two hosts: two H100 replicas are gone and cannot be placed again.
    sim.manual_ready = True
    sim.no_capacity = {"h100"}
    sim.ready = {"h100": 1, "rtx5090": 0}
    spilled = sim.run(1, rps=25)
    assert spilled == {"h100": 3, "rtx5090": 2}, "the H100 keeps asking, the RTX group covers now"

    # The overflow replicas start; the H100 group still has no capacity.
    sim.ready = {"h100": 1, "rtx5090": 2}
    assert sim.run(30, rps=25) == {"h100": 3, "rtx5090": 2}

    # Capacity returns: while the H100 replicas start, the overflow keeps covering.
    sim.no_capacity = set()
    assert sim.run(5, rps=25) == {"h100": 3, "rtx5090": 2}
    # Once they are ready, the overflow moves back at once.
    sim.ready = {"h100": 3, "rtx5090": 2}
    assert sim.run(1, rps=25) == {"h100": 3, "rtx5090": 0}


def test_spill_respects_max_of_the_receiving_group() -> None:
    sim = make([GroupConfig("a", 0, 4, None), GroupConfig("b", 0, 3, None)])
    assert sim.run(120, rps=60) == {"a": 4, "b": 2}
    sim.manual_ready = True
    sim.no_capacity = {"a"}
    sim.ready = {"a": 1, "b": 2}
    # a lacks three replicas; b has room for one more only.
    assert sim.run(1, rps=60) == {"a": 4, "b": 3}


def test_spill_wraps_to_an_earlier_group_with_room() -> None:
    # A fixed later group that cannot get capacity hands its replicas to the base.
    sim = make([GroupConfig("base", 0, 5, None), GroupConfig("pinned", 2, 2, None)])
    sim.manual_ready = True
    sim.ready = {"base": 1, "pinned": 2}
    assert sim.run(90, rps=8) == {"base": 1, "pinned": 2}
    sim.no_capacity = {"pinned"}
    sim.ready = {"base": 1, "pinned": 0}
    assert sim.run(1, rps=8) == {"base": 3, "pinned": 2}


# --- tolerance and delays ---------------------------------------------------------------------------
def test_no_change_inside_the_tolerance_band() -> None:
    sim = make([GroupConfig("g", 1, 10, None)], ready={"g": 5})
    sim.manual_ready = True
    # Five replicas carry up to 50 rps at target; fewer are chosen only when the load fits four
    # with 10% to spare (36 rps): in between, nothing moves.
    for rps in (38, 44, 47, 49.5, 43):
        assert sim.run(300, rps=rps) == {"g": 5}
    assert sim.seen("g") == {5}
    # Past the target: scale up (53 rps -> 6 replicas).
    assert sim.run(120, rps=53) == {"g": 6}
    sim.ready = {"g": 6}
    # Below the band: scale down (after the delay) to what carries 30 / 0.9 rps -> 4.
    assert sim.run(300, rps=30) == {"g": 4}


def test_scale_up_waits_for_scale_up_delay_after_last_event() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=100, scale_down_delay=1000, headroom_z=0)
    sim = make([GroupConfig("g", 1, 10, None)], scaling)
    sim.run(60, rps=25)  # first scale-up happens at once (no earlier event)
    first = sim.history[-1]["g"]
    assert first == 3
    event_at = next(i for i, d in enumerate(sim.history) if d["g"] == 3)
    # A moderate rise (no burst: within 3 sigmas of what 3 replicas serve in 6 s) waits for the delay.
    sim.run(30, rps=33)
    assert sim.history[-1]["g"] == 3
    sim.run(100, rps=33)
    changed_at = next(i for i, d in enumerate(sim.history) if d["g"] > 3)
    assert changed_at - event_at >= 100
    assert sim.history[-1]["g"] == 4


def test_scale_down_waits_for_scale_down_delay_after_last_event() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=0, scale_down_delay=300, headroom_z=0, burst_sigmas=None)
    sim = make([GroupConfig("g", 1, 10, None)], scaling, ready={"g": 5})
    sim.run(60, rps=40)
    assert sim.history[-1] == {"g": 5}
    sim.run(60, rps=60)  # a moderate rise (no burst): a stable scale-up, a scaling event
    assert sim.history[-1] == {"g": 6}
    event_at = next(i for i, d in enumerate(sim.history) if d["g"] == 6)
    sim.run(500, rps=10)
    drop_at = next(i for i, d in enumerate(sim.history) if i > event_at and d["g"] < 6)
    assert drop_at - event_at >= 300
    assert sim.history[-1] == {"g": 2}


# --- scale to zero and back -------------------------------------------------------------------------
def test_scale_to_zero_after_delay_without_traffic_and_back_at_once() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=300, scale_down_delay=120)
    sim = make([GroupConfig("g", 0, 3, None)], scaling, ready={"g": 1})
    sim.run(30, rps=2)
    assert sim.history[-1] == {"g": 1}
    last_request_at = sim.clock[0]
    sim.run(119, rps=0)
    assert sim.history[-1] == {"g": 1}, "not before scale_down_delay without traffic"
    sim.run(30, rps=0)
    assert sim.history[-1] == {"g": 0}
    zero_at = sim.clock[0] - 30 + next(i for i, d in enumerate(sim.history[-30:]) if d["g"] == 0) + 1
    assert zero_at - last_request_at >= 120

    # A request is held by the gateway while there are no replicas: one starts at once,
    # even though the last scaling event was moments ago and scale_up_delay is 300 s.
    sim.manual_ready = True
    sim.ready = {"g": 0}
    sim.scaler.observe(LoadSample(sim.clock[0] + 1, sim.requests_total + 1, 1, 1))
    sim.clock[0] += 1
    assert sim.scaler.decide({"g": 0}, set()) == {"g": 1}


def test_scale_from_zero_goes_to_first_group_with_capacity() -> None:
    sim = make([GroupConfig("a", 0, 2, None), GroupConfig("b", 0, 2, None)], ready={"a": 0, "b": 0})
    sim.no_capacity = {"a"}
    sim.manual_ready = True
    decision = sim.run(1, rps=0, in_flight=1, waiting=1)
    assert decision == {"a": 1, "b": 1}, "a keeps asking, b serves the held request"


def test_idle_service_at_zero_stays_at_zero() -> None:
    sim = make([GroupConfig("g", 0, 3, None)], ready={"g": 0})
    sim.run(1000, rps=0)
    assert sim.seen("g") == {0}


# --- burst (panic) path -----------------------------------------------------------------------------
def test_spike_is_met_within_seconds_despite_long_scale_up_delay() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=300, scale_down_delay=600)
    sim = make([GroupConfig("g", 1, 20, None)], scaling)
    sim.run(120, rps=15)
    assert sim.history[-1] == {"g": 2}
    sim.run(8, rps=100)
    assert sim.history[-1]["g"] >= 10, sim.history[-8:]
    assert sim.scaler.panicking


def test_no_scale_down_while_panicking_and_burst_released_after_panic() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=300, scale_down_delay=600)
    sim = make([GroupConfig("g", 1, 20, None)], scaling)
    sim.run(120, rps=15)
    sim.run(60, rps=100)
    peak = sim.history[-1]["g"]
    sim.run(20, rps=15)
    assert sim.history[-1]["g"] == peak, "panic never scales down"
    # Panic ends a stable window after the last trigger, then burst capacity follows the stable
    # window down after burst_release_delay (60 s) instead of scale_down_delay (600 s).
    sim.run(300, rps=15)
    assert sim.history[-1] == {"g": 2}


def test_burst_capacity_held_for_scale_down_delay_when_release_disabled() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=300, scale_down_delay=600)
    sim = make([GroupConfig("g", 1, 20, None)], scaling, tuning=Tuning(burst_release_delay=None))
    sim.run(120, rps=15)
    sim.run(60, rps=100)
    peak = sim.history[-1]["g"]
    sim.run(400, rps=15)
    assert sim.history[-1]["g"] == peak
    sim.run(300, rps=15)
    assert sim.history[-1] == {"g": 2}


def test_panic_scale_up_delay_is_configurable() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=300, scale_down_delay=600)
    sim = make([GroupConfig("g", 1, 20, None)], scaling, tuning=Tuning(panic_scale_up_delay=20))
    sim.run(120, rps=15)
    sim.run(5, rps=100)
    first = sim.history[-1]["g"]
    assert first > 2
    # A second step: the next panic step waits 20 s after the first.
    sim.run(10, rps=200)
    assert sim.history[-1]["g"] == first, "next panic step waits 20 s"
    sim.run(15, rps=200)
    assert sim.history[-1]["g"] > first


# --- metrics ----------------------------------------------------------------------------------------
def test_in_flight_metric_scales_slow_requests_the_rate_misses() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=0, scale_down_delay=600, in_flight_target=4)
    sim = make([GroupConfig("g", 1, 10, None)], scaling)
    # 2 rps of 15-second requests: ~30 in flight, far above what the rate alone asks for.
    assert sim.run(120, rps=2, in_flight=30) == {"g": 8}


def test_in_flight_ignored_while_replicas_start() -> None:
    scaling = ScalingConfig("rps", target=10, scale_up_delay=0, scale_down_delay=600, in_flight_target=4)
    sim = make([GroupConfig("g", 1, 10, None)], scaling)
    sim.manual_ready = True
    sim.ready = {"g": 1}
    first = sim.run(31, rps=2, in_flight=30)  # the stable path acts once half a window is seen
    assert first["g"] > 1
    # The queue waiting for those replicas is not new demand: no further growth while they start.
    assert sim.run(60, rps=2, in_flight=60) == first


class QueueDepthMetric:
    """A further metric in one class: requests held at the gateway, `target` per replica."""

    name = "queue"
    leading = False

    def load(self, window: LoadWindow, period: float, now: float, replicas: int) -> float:
        latest = window.latest
        return float(latest.waiting) if latest else 0.0

    def per_replica(self, scaling: ScalingConfig) -> float | None:
        return 5.0


def test_a_further_metric_is_one_class() -> None:
    sim = make([GroupConfig("g", 1, 10, None)], metrics=(RpsMetric(), QueueDepthMetric()))
    assert sim.run(60, rps=1, in_flight=23, waiting=23) == {"g": 5}  # ceil(23 / 5)


def test_default_metrics_are_rps_and_in_flight() -> None:
    assert RpsMetric().per_replica(RPS10) == 10
    assert InFlightMetric().per_replica(RPS10) is None  # the in-flight safety net of rps is opt-in
    assert InFlightMetric().per_replica(ScalingConfig("concurrency", 6)) == 6
    assert InFlightMetric().per_replica(ScalingConfig("rps", 10, in_flight_target=3)) == 3


# --- window ---------------------------------------------------------------------------------------
def test_window_rate_and_counter_reset() -> None:
    w = LoadWindow(60)
    for t in range(0, 121):
        w.observe(LoadSample(float(t), t * 7, 0, 0))
    assert w.rate(60, 120) == pytest.approx(7)
    assert w.rate(6, 120) == pytest.approx(7)
    w.observe(LoadSample(121.0, 3, 0, 0))  # the gateway restarted: counters start over
    assert w.rate(60, 121) == 0.0
    w.observe(LoadSample(122.0, 13, 2, 0))
    assert w.rate(60, 122) == pytest.approx(10)
    assert w.mean_running(1.5, 122) == pytest.approx(1.0)


# --- lifecycle --------------------------------------------------------------------------------------
def test_first_decision_keeps_what_runs() -> None:
    sim = make([GroupConfig("g", 1, 10, None)], ready={"g": 6})
    sim.manual_ready = True
    assert sim.run(5, rps=50) == {"g": 6}, "a restarted controller does not bounce healthy replicas"


def test_reconfigure_applies_a_new_range_in_place() -> None:
    sim = make([GroupConfig("g", 1, 10, None)])
    sim.run(120, rps=80)
    assert sim.history[-1] == {"g": 8}
    sim.scaler.reconfigure([GroupConfig("g", 1, 4, None)], RPS10)
    assert sim.run(1, rps=80) == {"g": 4}
    sim.scaler.reconfigure([GroupConfig("g", 1, 4, None), GroupConfig("extra", 0, 6, None)], RPS10)
    # The new group starts empty: 80 rps against 40 of capacity is a burst, met at target.
    assert sim.run(40, rps=80) == {"g": 4, "extra": 4}


@pytest.mark.parametrize(
    "build",
    [
        lambda: ScalingConfig("rps", target=0),
        lambda: ScalingConfig("rps", target=5, scale_up_delay=-1),
        lambda: GroupConfig("g", 3, 2, None),
        lambda: Tuning(panic_window=120, stable_window=60),
        lambda: ScalingConfig("rps", target=5, burst_sigmas=0),
        lambda: ScalingConfig("rps", target=5, schedule=(ScheduleEntry("every monday", 2),)),
        lambda: ScalingConfig("tokens", target=5),
        lambda: ServiceAutoscaler([GroupConfig("g", 1, 3, None)], None),
        lambda: ServiceAutoscaler([GroupConfig("g", 1, 1, None), GroupConfig("g", 0, 1, None)], RPS10),
        lambda: ServiceAutoscaler([], RPS10),
    ],
)
def test_inconsistent_inputs_raise_typed_error(build: Callable[[], object]) -> None:
    with pytest.raises(ScalingConfigError):
        build()


# --- invariants -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    bounds=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=4),
    steps=st.lists(
        st.tuples(st.floats(0, 200), st.integers(0, 50), st.integers(0, 5), st.integers(0, 15)),
        min_size=1,
        max_size=25,
    ),
)
def test_every_group_stays_within_its_range(bounds: list[tuple[int, int]], steps: list[tuple[float, int, int, int]]) -> None:
    groups = [GroupConfig(f"g{i}", lo, lo + extra, None) for i, (lo, extra) in enumerate(bounds)]
    clock = [0.0]
    scaler = ServiceAutoscaler(groups, RPS10, clock=lambda: clock[0])
    total = 0
    for rps, in_flight, ready_each, gap in steps:
        clock[0] += gap + 1
        total += int(rps * (gap + 1))
        scaler.observe(LoadSample(clock[0], total, in_flight, 0))
        short = {groups[int(rps) % len(groups)].name} if in_flight % 3 == 0 else set()
        decision = scaler.decide({g.name: ready_each for g in groups}, short)
        assert set(decision) == {g.name for g in groups}
        for g in groups:
            assert g.min <= decision[g.name] <= g.max


def test_short_windows_scale_within_seconds() -> None:
    """The setting an end-to-end test uses: short windows make every step take seconds."""
    scaling = ScalingConfig("rps", target=5, scale_up_delay=2, scale_down_delay=5)
    tuning = Tuning(stable_window=6, panic_window=1, burst_release_delay=2)
    sim = make([GroupConfig("base", 1, 1, None), GroupConfig("overflow", 0, 3, None)], scaling, tuning)
    sim.run(10, rps=18)
    assert sim.history[-1] == {"base": 1, "overflow": 3}
    sim.run(25, rps=0)
    assert sim.history[-1] == {"base": 1, "overflow": 0}
    back = next(i for i, d in enumerate(sim.history) if i >= 10 and d["overflow"] == 0)
    assert back - 10 <= 20


# --- busy periods that come back, flash crowds (issue 19) ---------------------------------------------
BURSTY = ScalingConfig("rps", target=10, scale_up_delay=60, scale_down_delay=300, window=60, headroom_z=0)


def test_burst_capacity_is_not_released_in_a_new_busy_period() -> None:
    # 30 s at 60 rps, 62 s quiet, then 65 rps: the release came 29 s into the new busy period,
    # sized on the long window alone (6 -> 4), and the burst path restarted them a second later (-> 7).
    sim = make([GroupConfig("g", 1, 20, None)], BURSTY)
    sim.run(120, rps=15)
    sim.run(30, rps=60)
    sim.run(62, rps=5)
    start = len(sim.history)
    sim.run(60, rps=65)
    busy = [d["g"] for d in sim.history[start:]]
    drops = [(a, b) for a, b in zip(busy, busy[1:]) if b < a]
    assert not drops, busy
    assert min(busy[6:]) >= 6, busy  # what 65 rps over the burst window needs, give or take the step


def test_release_hold_grows_when_bursts_keep_coming_back() -> None:
    sim = make([GroupConfig("g", 1, 20, None)], BURSTY)
    sim.run(120, rps=8)
    lows = []
    for _ in range(4):
        sim.run(60, rps=60)
        start = len(sim.history)
        sim.run(200, rps=5)
        lows.append(min(d["g"] for d in sim.history[start:]))
    # The first gap is unknown, so the capacity goes after the 60 s release; once the bursts
    # have come back 200 s apart, the hold covers the gap.
    assert lows[0] == 1
    assert lows[1:] == [6, 6, 6], lows


def test_release_hold_runs_from_the_end_of_a_long_busy_period() -> None:
    # Busy periods longer than the window: the hold is counted from each period's end, not from
    # when the long window caught up with it (which released the capacity as the period ended).
    sim = make([GroupConfig("g", 1, 20, None)], BURSTY)
    sim.run(120, rps=8)
    lows = []
    for _ in range(4):
        sim.run(150, rps=60)
        start = len(sim.history)
        sim.run(200, rps=5)
        lows.append(min(d["g"] for d in sim.history[start:]))
    assert lows[0] == 1
    assert lows[1:] == [6, 6, 6], lows


def test_flash_crowd_gets_its_capacity_in_one_launch() -> None:
    sim = make([GroupConfig("g", 1, 40, None)], BURSTY)
    sim.run(120, rps=8)
    start = len(sim.history)
    sim.run(20, rps=200)  # 25x
    counts = [d["g"] for d in sim.history[start:]]
    launches = [b for a, b in zip([1, *counts], counts) if b > a]
    assert launches == [20], counts


def test_no_headroom_replica_from_the_step_of_a_crowd() -> None:
    # Poisson-like noise is what headroom is for; a step in the window is not noise, and read as
    # such it added replicas that were ready only after the crowd had ended.
    scaling = ScalingConfig("rps", target=10, scale_up_delay=60, scale_down_delay=300, window=60)
    sim = make([GroupConfig("g", 1, 40, None)], scaling)
    sim.run(120, rps=8)
    sim.run(240, rps=200)
    assert max(d["g"] for d in sim.history) == 20, sorted({d["g"] for d in sim.history})
    sim.run(30, rps=8)
    assert max(d["g"] for d in sim.history) == 20
