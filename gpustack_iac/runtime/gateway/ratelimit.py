"""Per-service rate limits (`rate_limits` in a service configuration): token buckets per path prefix and key.

A limit applies to the paths of the service (as its replicas see them) that start with its
`prefix`; when several prefixes match, the longest one decides, as with nginx locations. Each
distinct key (the client's address, or a header's value) has its own bucket of `burst + 1`
requests, refilled at `rps` per second, so `burst` requests above the rate pass at once (nginx's
`limit_req burst=... nodelay`). A request without the key header is counted by its address.

Paths are compared after percent-decoding and removing empty and dot segments, so `/v1//chat` or
`/v1/%63hat` cannot slip past a `/v1/chat` limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

# Buckets kept at most; past it, full buckets (clients quiet long enough to be back at their burst) are dropped.
MAX_KEYS = 100_000


@dataclass(frozen=True)
class RateLimitRule:
    prefix: str
    rps: float
    burst: int = 0
    header: str | None = None  # key by this header's value; None: by the client's address

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ValueError(f"rate limit prefix {self.prefix!r} must start with '/'")
        if not self.rps > 0 or self.burst < 0:
            raise ValueError("rate limit rps must be > 0 and burst >= 0")


def normalize_path(path: str) -> str:
    """The path as a replica would resolve it: decoded, without empty or dot segments."""
    decoded = unquote(path) if "%" in path else path
    if "//" not in decoded and "/." not in decoded:
        return decoded
    out: list[str] = []
    for segment in decoded.split("/"):
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = "/" if decoded.endswith("/") and out else ""
    return "/" + "/".join(out) + trailing


def pick_rule(rules: tuple[RateLimitRule, ...], path: str) -> RateLimitRule | None:
    """The rule with the longest prefix that `path` (normalised) starts with."""
    if not rules:
        return None
    path = normalize_path(path)
    best: RateLimitRule | None = None
    for rule in rules:
        if path.startswith(rule.prefix) and (best is None or len(rule.prefix) > len(best.prefix)):
            best = rule
    return best


class RateLimiter:
    """Token buckets by (service, prefix, key); one per gateway, used from its event loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # key -> [tokens, last refill, seconds after which the bucket is full again]
        self._buckets: dict[tuple[str, str, str], list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, service: str, rule: RateLimitRule, key: str) -> float:
        """0 when the request may pass (a token is taken), else the seconds until the next token."""
        now = self._clock()
        capacity = rule.burst + 1.0
        bucket_key = (service, rule.prefix, key)
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune(now)
            self._buckets[bucket_key] = [capacity - 1.0, now, capacity / rule.rps]
            return 0.0
        tokens = min(capacity, bucket[0] + (now - bucket[1]) * rule.rps)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rule.rps

    def forget_service(self, service: str) -> None:
        for key in [k for k in self._buckets if k[0] == service]:
            del self._buckets[key]

    def _prune(self, now: float) -> None:
        # A bucket untouched for (burst + 1) / rps seconds is full again: dropping it changes nothing.
        # If that frees nothing, the oldest half goes (dicts keep insertion order).
        stale = [k for k, b in self._buckets.items() if now - b[1] >= b[2]]
        for key in stale:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            for key in list(self._buckets)[: self._max_keys // 2]:
                del self._buckets[key]


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header (at least 1)."""
    return max(1, math.ceil(seconds))
