"""The two defects of issue 9 and the new scaling settings, driven by an injected clock.

- The burst path fired on Poisson noise at 80% of target, starting and dropping replicas.
- Held requests were read as in-flight load on every tick, so a cold start asked for the maximum.
"""

from __future__ import annotations

import bisect
import math
import random
from datetime import datetime, timedelta, timezone

from gpustack_iac.runtime.autoscaler import GroupConfig, LoadSample, ScalingConfig, ScheduleEntry, ServiceAutoscaler
from gpustack_iac.runtime.scaling.metrics import TTFB_BUCKETS, LatencyMetric
from gpustack_iac.runtime.scaling.window import LoadWindow


def poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def test_no_flapping_at_80_percent_of_target_under_poisson_noise_for_two_hours() -> None:
    clock = [0.0]
    scaling = ScalingConfig("rps", target=10, scale_up_delay=60, scale_down_delay=300)
    scaler = ServiceAutoscaler([GroupConfig("g", 1, 10, None)], scaling, clock=lambda: clock[0])
    rng = random.Random(9)
    total, seen = 0, []
    for t in range(2 * 3600):
        clock[0] = float(t)
        total += poisson(rng, 8.0)
        scaler.observe(LoadSample(clock[0], total, 4, 0))
        seen.append(scaler.decide({"g": 1}, set())["g"])
    assert set(seen) == {1}, f"launched extra replicas at {[t for t, n in enumerate(seen) if n > 1][:10]}"


def test_cold_start_with_100_held_requests_starts_one_replica() -> None:
    """100 requests held while the first replica starts (60 s at about 1.7 rps) need one replica."""
    clock = [0.0]
    scaling = ScalingConfig("rps", target=10, scale_up_delay=60, scale_down_delay=300)
    scaler = ServiceAutoscaler([GroupConfig("g", 0, 10, None)], scaling, clock=lambda: clock[0])
    total, decisions = 0, []
    for t in range(600):  # idle for ten minutes
        clock[0] = float(t)
        scaler.observe(LoadSample(clock[0], 0, 0, 0))
        decisions.append(scaler.decide({"g": 0}, set())["g"])
    assert set(decisions) == {0}
    # The first held request starts one replica; 99 more arrive and wait while it starts.
    for t in range(600, 660):
        clock[0] = float(t)
        total = min(100, total + (1 if t == 600 else 2))
        scaler.observe(LoadSample(clock[0], total, total, total))
        decisions.append(scaler.decide({"g": 0}, set())["g"])
    assert total == 100
    assert set(decisions[600:]) == {1}, decisions[600:]
    # The replica is ready and drains the queue: still one replica for this rate.
    for t in range(660, 900):
        clock[0] = float(t)
        running = max(0, 100 - 10 * (t - 660))
        scaler.observe(LoadSample(clock[0], total + (t - 660) * 2 // 1, running, 0))
        total_now = scaler.decide({"g": 1}, set())["g"]
        decisions.append(total_now)
    assert set(decisions[660:]) == {1}, decisions[660:]


def test_a_significant_burst_still_scales_at_once_despite_the_delay() -> None:
    clock = [0.0]
    scaling = ScalingConfig("rps", target=10, scale_up_delay=300, scale_down_delay=600)
    scaler = ServiceAutoscaler([GroupConfig("g", 1, 20, None)], scaling, clock=lambda: clock[0])
    rng = random.Random(1)
    total = 0
    for t in range(300):
        clock[0] = float(t)
        total += poisson(rng, 8.0 if t < 200 else 60.0)
        scaler.observe(LoadSample(clock[0], total, 0, 0))
        n = scaler.decide({"g": 1}, set())["g"]
        if t >= 210:
            break
    assert n >= 6 and scaler.panicking


def test_headroom_adds_replicas_for_noise_within_the_budget() -> None:
    def steady_state(rate: float, z: float, budget: float, noisy: bool) -> int:
        clock = [0.0]
        scaling = ScalingConfig("rps", 10, 0, 0, headroom_z=z, headroom_budget=budget, burst_sigmas=None)
        scaler = ServiceAutoscaler([GroupConfig("g", 1, 20, None)], scaling, clock=lambda: clock[0])
        rng, total, carry, n = random.Random(3), 0, 0.0, 1
        for t in range(600):
            clock[0] = float(t)
            if noisy:
                total += poisson(rng, rate)
            else:
                carry += rate
                total += int(carry)
                carry -= int(carry)
            scaler.observe(LoadSample(clock[0], total, 0, 0))
            n = scaler.decide({"g": n}, set())["g"]
        return n

    assert steady_state(45, 0, 0.2, noisy=True) == 5
    assert steady_state(45, 1, 0.2, noisy=True) == 6  # 45 + 1 x sqrt(45) > 50
    assert steady_state(45, 1, 0.2, noisy=False) == 5  # no measured variance, no headroom
    assert steady_state(45, 1, 0.0, noisy=True) == 5  # no budget, no headroom
    assert steady_state(8, 1, 0.2, noisy=True) == 1  # floor(0.2 x 1) = 0 extra replicas


def test_schedule_sets_a_minimum_during_matching_minutes() -> None:
    clock = [0.0]
    start = datetime(2026, 11, 30, 7, 58, tzinfo=timezone.utc)  # a Monday
    wall = [start]
    scaling = ScalingConfig("rps", 10, 300, 120, burst_sigmas=None, headroom_z=0, schedule=(ScheduleEntry("* 8-9 * * 1-5", 4),))
    scaler = ServiceAutoscaler([GroupConfig("g", 0, 10, None)], scaling, clock=lambda: clock[0], wall_clock=lambda: wall[0])
    seen: dict[tuple[int, int], int] = {}
    total, n = 0, 0
    for second in range(0, 200 * 60, 10):
        clock[0] = float(second)
        wall[0] = start + timedelta(seconds=second)
        busy = datetime(2026, 11, 30, 8, 30, tzinfo=timezone.utc) <= wall[0] < datetime(2026, 11, 30, 8, 40, tzinfo=timezone.utc)
        total += 550 if busy else 0
        scaler.observe(LoadSample(clock[0], total, 0, 0))
        n = scaler.decide({"g": n}, set())["g"]
        seen[(wall[0].hour, wall[0].minute)] = n
    assert seen[(7, 59)] == 0
    assert seen[(8, 0)] == 4 and seen[(8, 29)] == 4
    # 55 rps at 8:30: the floor was no scaling event, so scale_up_delay (300 s) does not hold it.
    assert seen[(8, 31)] >= 5
    assert seen[(8, 39)] == 6
    assert seen[(9, 59)] == 4
    assert seen[(10, 10)] == 0, "back to zero after scale_down_delay without traffic"


def test_latency_metric_reads_p90_from_the_gateway_histogram() -> None:
    w = LoadWindow(60)
    buckets = [0] * (len(TTFB_BUCKETS) + 1)
    w.observe(LoadSample(0.0, 0, 0, 0, tuple(buckets)))
    for i in range(100):  # 90 fast requests (50 ms), 10 slow ones (2 s)
        buckets[bisect.bisect_left(TTFB_BUCKETS, 0.05 if i < 90 else 2.0)] += 1
    w.observe(LoadSample(10.0, 100, 0, 0, tuple(buckets)))
    p90 = w.quantile(0.9, TTFB_BUCKETS, 60, 10.0)
    assert p90 is not None and 0.04 <= p90 <= 0.06
    assert w.quantile(0.95, TTFB_BUCKETS, 60, 10.0) > 1.5
    # Two replicas at p90 ~50 ms against a 25 ms target: (at least) four replicas' worth of load.
    load = LatencyMetric().load(w, 60, 10.0, replicas=2)
    assert 4 <= load / 25 <= 4.5


def test_gateway_counts_time_to_first_byte_and_held_requests_for_the_autoscaler() -> None:
    from gpustack_iac.runtime.gateway.metrics import Metrics

    m = Metrics()
    for seconds in (0.01, 0.02, 0.3):
        m.request_started("s")
        m.first_byte("s", seconds)
        m.request_finished("s", seconds, False)
    m.request_started("s")
    m.waiting_changed("s", 1)  # one request held while the service has no ready replica
    load = m.snapshot()["s"]
    assert (load.requests_total, load.in_flight, load.waiting) == (4, 1, 1)
    assert len(load.ttfb_buckets) == len(TTFB_BUCKETS) + 1 and sum(load.ttfb_buckets) == 3
    w = LoadWindow(60)
    w.observe(LoadSample(0.0, 0, 0, 0, (0,) * len(load.ttfb_buckets)))
    w.observe(LoadSample(1.0, load.requests_total, load.in_flight, load.waiting, load.ttfb_buckets))
    assert w.mean_running(0.5, 1.0) == 0, "a held request is not load on a replica"
    assert w.mean_waiting(0.5, 1.0) == 1
    p90 = w.quantile(0.9, TTFB_BUCKETS, 60, 1.0)
    assert p90 is not None and 0.27 < p90 <= 0.32  # within the 12% bucket around 0.3 s


def test_queue_and_concurrency_metrics_size_on_their_own_gauges() -> None:
    def settle(scaling: ScalingConfig, in_flight: int, waiting: int) -> int:
        clock = [0.0]
        scaler = ServiceAutoscaler([GroupConfig("g", 1, 10, None)], scaling, clock=lambda: clock[0])
        n = 1
        for t in range(120):
            clock[0] = float(t)
            scaler.observe(LoadSample(clock[0], t, in_flight, waiting))
            n = scaler.decide({"g": n}, set())["g"]  # replicas are ready at once
        return n

    # 23 held requests at 5 per replica; 12 running (23 in flight of which 11 held) at 3 per replica.
    assert settle(ScalingConfig("queue", 5, 0, 60), in_flight=23, waiting=23) == 5
    assert settle(ScalingConfig("concurrency", 3, 0, 60), in_flight=23, waiting=11) == 4
    # The rate (1 rps) alone would need one replica: neither metric applies to an rps service.
    assert settle(ScalingConfig("rps", 10, 0, 60), in_flight=23, waiting=11) == 1
