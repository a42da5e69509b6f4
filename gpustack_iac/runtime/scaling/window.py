"""A sliding window of gateway load samples, turned into rates, noise estimates and averages."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from gpustack_iac.runtime.scaling.config import LoadSample


class LoadWindow:
    """Keeps just enough samples to answer questions about the last `horizon` seconds.

    Counters are cumulative; a counter that goes down means the gateway restarted, so the
    history before it is dropped rather than read as negative traffic.
    """

    def __init__(self, horizon: float) -> None:
        self._horizon = horizon
        self._samples: deque[LoadSample] = deque()
        self.last_activity_at: float | None = None  # last sample that saw a new, running or held request

    @property
    def horizon(self) -> float:
        return self._horizon

    def resize(self, horizon: float) -> None:
        self._horizon = horizon

    def observe(self, sample: LoadSample) -> None:
        prev = self._samples[-1] if self._samples else None
        if prev is not None and (sample.at < prev.at or sample.requests_total < prev.requests_total):
            self._samples.clear()
            prev = None
        new_requests = prev is not None and sample.requests_total > prev.requests_total
        if new_requests or sample.in_flight > 0 or sample.waiting > 0:
            self.last_activity_at = sample.at
        self._samples.append(sample)
        self._prune(sample.at)

    def _prune(self, now: float) -> None:
        # Keep one sample at or before the horizon's start so a full-window rate has a base.
        cutoff = now - self._horizon
        while len(self._samples) >= 2 and self._samples[1].at <= cutoff:
            self._samples.popleft()

    def span(self) -> float:
        """Seconds of history the window holds."""
        return self._samples[-1].at - self._samples[0].at if len(self._samples) >= 2 else 0.0

    @property
    def latest(self) -> LoadSample | None:
        return self._samples[-1] if self._samples else None

    def demand_now(self) -> bool:
        """Whether the newest sample shows a request arriving, running or held."""
        if not self._samples:
            return False
        last = self._samples[-1]
        if last.in_flight > 0 or last.waiting > 0:
            return True
        return len(self._samples) >= 2 and last.requests_total > self._samples[-2].requests_total

    def _base(self, period: float, now: float) -> LoadSample | None:
        if len(self._samples) < 2:
            return None
        start = now - period
        base = self._samples[0]
        for s in self._samples:
            if s.at <= start:
                base = s
            else:
                break
        return self._samples[-2] if base is self._samples[-1] else base

    def arrivals(self, period: float, now: float) -> tuple[int, float]:
        """(requests that arrived, seconds they arrived in) over about the last `period` seconds."""
        base = self._base(period, now)
        if base is None:
            return 0, 0.0
        last = self._samples[-1]
        return last.requests_total - base.requests_total, max(0.0, last.at - base.at)

    def rate(self, period: float, now: float) -> float:
        """Requests per second over the last `period` seconds (0 with fewer than two samples)."""
        count, elapsed = self.arrivals(period, now)
        return count / elapsed if elapsed > 0 else 0.0

    def step_rate(self, period: float, now: float, min_llr: float = 6.0) -> tuple[float, float | None]:
        """(rate, time of the step) for the last `period` seconds, with a step up found in them.

        A step is the split of the period with the largest Poisson log-likelihood ratio against
        one rate for the whole period (a CUSUM change point); it counts when that ratio exceeds
        `min_llr` (about 1 in 400 windows by noise alone) and the later part's rate is the
        higher, and the rate is then the one since the step: a step one second old is sized on
        that second, not diluted by the seconds before it. Without a step: the period's rate
        and None.
        """
        overall, split = self._change(period, now, min_llr, up_only=True)
        return split if split is not None else (overall, None)

    def change_at(self, period: float, now: float, min_llr: float = 6.0) -> float | None:
        """When the rate changed (up or down) within the last `period` seconds; None: no change."""
        _, split = self._change(period, now, min_llr, up_only=False)
        return split[1] if split is not None else None

    def _change(self, period: float, now: float, min_llr: float, up_only: bool) -> tuple[float, tuple[float, float] | None]:
        """(the period's rate, (rate after, time) of its most likely change point or None)."""
        base = self._base(period, now)
        if base is None:
            return 0.0, None
        last = self._samples[-1]
        total, span = last.requests_total - base.requests_total, last.at - base.at
        if span <= 0:
            return 0.0, None
        overall = total / span
        best_llr, best = min_llr, None
        for split in self._samples:
            if not base.at < split.at < last.at:
                continue
            n1, t1 = split.requests_total - base.requests_total, split.at - base.at
            n2, t2 = total - n1, last.at - split.at
            if up_only and n2 / t2 <= n1 / t1:
                continue
            llr = _poisson_llr(n1, t1, overall) + _poisson_llr(n2, t2, overall)
            if llr > best_llr:
                best_llr, best = llr, (n2 / t2, split.at)
        return overall, best

    def variance(self, period: float, now: float) -> float:
        """Variance of the arrivals in one second, from the sample-to-sample counts of the period.

        Each interval's count c over d seconds deviates from rate x d; (c - rate x d)^2 / d
        estimates the one-second variance whatever the tick length (Poisson traffic gives about
        the rate itself, evenly spaced requests about zero). A rate that changes within the
        period adds to it, which is wanted: a ramp needs headroom too.
        """
        rate = self.rate(period, now)
        start = now - period
        total, n = 0.0, 0
        prev: LoadSample | None = None
        for s in self._samples:
            if prev is not None and s.at > start:
                d = s.at - prev.at
                if d > 0:
                    c = s.requests_total - prev.requests_total
                    total += (c - rate * d) ** 2 / d
                    n += 1
            prev = s
        return total / n if n else rate

    def _recent(self, period: float, now: float) -> list[LoadSample]:
        start = now - period
        values = [s for s in self._samples if s.at > start]
        if not values and self._samples:
            values = [self._samples[-1]]
        return values

    def mean_running(self, period: float, now: float) -> float:
        """Mean requests being served (accepted, not held) over the last `period` seconds.

        Held requests are left out: they are demand the rate already counted once when they
        arrived, not load on a replica, and counting them on every tick made each cold start
        ask for the group's maximum.
        """
        values = [max(0, s.in_flight - s.waiting) for s in self._recent(period, now)]
        return sum(values) / len(values) if values else 0.0

    def mean_waiting(self, period: float, now: float) -> float:
        """Mean requests held at the gateway over the last `period` seconds."""
        values = [s.waiting for s in self._recent(period, now)]
        return sum(values) / len(values) if values else 0.0

    def quantile(self, q: float, bounds: Sequence[float], period: float, now: float) -> float | None:
        """The q-quantile of times to first byte seen in the period (seconds), None without any.

        Interpolates linearly inside the bucket that holds it, as Prometheus' histogram_quantile
        does; the overflow bucket answers with its lower bound.
        """
        base = self._base(period, now)
        if base is None:
            return None
        last = self._samples[-1]
        if not last.ttfb_buckets or len(base.ttfb_buckets) != len(last.ttfb_buckets):
            return None
        counts = [a - b for a, b in zip(last.ttfb_buckets, base.ttfb_buckets)]
        total = sum(counts)
        if total <= 0:
            return None
        rank = q * total
        seen = 0
        for i, c in enumerate(counts):
            if c and seen + c >= rank:
                if i >= len(bounds):
                    return bounds[-1]
                lower = bounds[i - 1] if i > 0 else 0.0
                return lower + (bounds[i] - lower) * (rank - seen) / c
            seen += c
        return bounds[-1]


def _poisson_llr(count: int, seconds: float, overall: float) -> float:
    """Log-likelihood gain of a segment's own Poisson rate over the overall rate."""
    if count <= 0 or overall <= 0:
        return seconds * overall  # a silent segment: the overall rate predicted that many
    own = count / seconds
    return count * math.log(own / overall) - (own - overall) * seconds
