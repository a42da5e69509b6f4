"""Busy periods that come back (issue 19, bench/autoscale.py's mmpp cells): what the autoscaler holds
between them and what it pays for. Pure: an injected clock, one gateway sample per simulated second,
replicas ready as soon as they are wanted."""

from __future__ import annotations

from collections.abc import Iterable

from gpustack_iac.runtime.autoscaler import GroupConfig, LoadSample, ScalingConfig, ServiceAutoscaler

# The bench's cluster: target 10 rps, delays 60 s / 300 s, window 60 s, headroom on (z = 1).
MMPP = ScalingConfig("rps", target=10, scale_up_delay=60, scale_down_delay=300, window=60)


class Feed:
    """Per-second arrival counts in, the decision per second out."""

    def __init__(self, scaling: ScalingConfig = MMPP) -> None:
        self.now, self.total = 1000.0, 0
        self.scaler = ServiceAutoscaler([GroupConfig("g", 1, 40, None)], scaling, clock=lambda: self.now)
        self.alloc = 1

    def run(self, counts: Iterable[int]) -> list[int]:
        out = []
        for c in counts:
            self.now += 1.0
            self.total += c
            self.scaler.observe(LoadSample(self.now, self.total, 0, 0))
            self.alloc = self.scaler.decide({"g": self.alloc}, set())["g"]
            out.append(self.alloc)
        return out


def noisy(rate: int, seconds: int) -> list[int]:
    """Counts around `rate` with a per-second variance of about `rate` (Poisson-like), deterministic."""
    swing = round(rate**0.5)
    return [rate + (swing if i % 2 else -swing) for i in range(seconds)]


def test_a_step_back_up_is_not_read_as_noise_across_the_step_down_before_it() -> None:
    # Evenly spaced arrivals carry no noise, so no headroom replica. The window held the busy period's
    # end (50 -> 5) and, 12 s later, the next one's start (5 -> 50): the variance was measured since
    # the older step, across the new one, and a sixth replica was held through the whole busy period.
    feed = Feed()
    feed.run([5] * 300)
    feed.run([50] * 60)
    feed.run([5] * 12)
    busy = feed.run([50] * 90)
    assert max(busy) == 5, busy


def test_headroom_goes_when_the_busy_period_ends_the_hold_keeps_what_its_rate_needs() -> None:
    # Poisson-like 50 rps: 5 replicas for the mean plus one of headroom. Once the period has ended
    # (a burst window without a busy tick), the headroom replica is not what a returning period
    # needs: it went only after the 60 s release, about 60 replica-seconds per busy period.
    feed = Feed()
    feed.run(noisy(5, 300))
    busy = feed.run(noisy(50, 120))
    assert max(busy) == 6, busy  # the headroom replica is there while the period lasts
    after = feed.run(noisy(5, 40))
    assert after[15:] == [5] * 25, after


def test_a_busy_period_shorter_than_the_burst_window_keeps_what_it_needed() -> None:
    # Busy periods coming back a minute apart hold their 5 replicas over the gaps. A 3 s return
    # was sized on the burst window's rate, which falls as the quiet seconds after it enter the
    # window: read a few seconds later it said 2, and the hold kept 2 of the 5 replicas.
    feed = Feed()
    feed.run([5] * 300)
    for _ in range(2):
        feed.run([50] * 60)
        feed.run([5] * 60)
    feed.run([50] * 3)
    after = feed.run([5] * 40)
    assert after == [5] * 40, after


def test_lulls_longer_than_the_scale_down_delay_do_not_erase_the_returns_seen_before_them() -> None:
    # Busy periods came back two minutes apart, then three lulls longer than scale_down_delay
    # followed. Those gaps say nothing about the hold (the normal scale-down covers them), yet
    # they took the three slots of the return memory: the next busy period's capacity went after
    # the bare 60 s release although returns within minutes were seen 20 minutes before.
    feed = Feed()
    feed.run([5] * 300)
    for _ in range(3):
        feed.run([50] * 60)
        feed.run([5] * 120)
    for _ in range(3):
        feed.run([50] * 30)
        feed.run([5] * 330)
    feed.run([50] * 60)
    after = feed.run([5] * 130)
    assert after[90:] == [5] * 40, after
