"""Exponential back-off with jitter, bounded by a total duration.

One policy for every "try again later" of the runtime: a task's retries after an error, no
capacity or an interruption, and the controller placing a replica when no host has capacity.
The delay before retry n (1-based) is `base * 2**(n-1)`, capped, times a random factor in
[1 - jitter, 1]: retries of many runs spread out instead of arriving together, and each delay
still grows. A retry whose start would fall past `duration` after the first attempt is not made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 300.0
    jitter: float = 0.5  # the share of each delay that is random
    duration: float | None = None  # seconds from the first attempt; None retries for ever

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        raw = min(self.base * (2 ** max(retry - 1, 0)), self.cap)
        factor = 1.0 - self.jitter * (rng or random).random()
        return float(raw * factor)

    def next_delay(self, retry: int, first_started: float, now: float, rng: random.Random | None = None) -> float | None:
        """The delay before retry `retry`, or None when that retry would start past `duration`."""
        wait = self.delay(retry, rng)
        if self.duration is not None and now + wait - first_started > self.duration:
            return None
        return wait
