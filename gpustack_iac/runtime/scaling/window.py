"""A sliding window of gateway load samples, turned into rates and averages."""

from __future__ import annotations

from collections import deque

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

    def rate(self, period: float, now: float) -> float:
        """Requests per second over the last `period` seconds (0 with fewer than two samples)."""
        if len(self._samples) < 2:
            return 0.0
        last = self._samples[-1]
        start = now - period
        base = self._samples[0]
        for s in self._samples:
            if s.at <= start:
                base = s
            else:
                break
        if base is last:
            base = self._samples[-2]
        elapsed = last.at - base.at
        if elapsed <= 0:
            return 0.0
        return (last.requests_total - base.requests_total) / elapsed

    def mean_in_flight(self, period: float, now: float) -> float:
        """Mean concurrent requests (running or held) over the samples of the last `period` seconds.

        Whether the gateway counts a held request in `in_flight` too is its business: the larger
        of the two gauges is read, so neither interpretation double-counts.
        """
        start = now - period
        values = [max(s.in_flight, s.waiting) for s in self._samples if s.at > start]
        if not values and self._samples:
            last = self._samples[-1]
            values = [max(last.in_flight, last.waiting)]
        return sum(values) / len(values) if values else 0.0
