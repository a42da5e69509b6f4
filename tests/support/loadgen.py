"""A bounded open-loop load generator for loopback targets.

Sends requests at a fixed rate for a fixed time (and never more than `max_requests`), records
every outcome, and refuses any address outside 127.0.0.0/8 and ::1: load tests here must never
leave the machine.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse


@dataclass
class Outcome:
    at: float  # seconds since the start
    status: int  # 0 when no HTTP answer came (refused, reset, timeout)
    body: bytes = b""
    error: str = ""


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def failures_after(self, t: float) -> list[Outcome]:
        return [o for o in self.failures if o.at >= t]


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"load tests target loopback only, not {host}")


class LoadGenerator:
    """Open loop: requests start on schedule whether or not earlier ones have answered."""

    def __init__(self, url: str, token: str | None, rate: float, duration: float, max_requests: int = 5000,
                 method: str = "GET", body: bytes | None = None, timeout: float = 30.0, workers: int = 32) -> None:
        _check_loopback(url)
        self.url, self.token, self.rate, self.duration = url, token, rate, duration
        self.max_requests, self.method, self.body, self.timeout, self.workers = max_requests, method, body, timeout, workers
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def _one(self) -> None:
        at = time.monotonic() - self._start
        request = urllib.request.Request(self.url, data=self.body, method=self.method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if self.body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                outcome = Outcome(at, response.status, response.read())
        except urllib.error.HTTPError as exc:
            outcome = Outcome(at, exc.code, exc.read(), str(exc))
        except (urllib.error.URLError, OSError) as exc:
            outcome = Outcome(at, 0, b"", str(exc))
        with self._lock:
            self.result.outcomes.append(outcome)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        sent = 0
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while not self._stop.is_set() and sent < self.max_requests:
                due = self._start + sent * interval
                now = time.monotonic()
                if now - self._start >= self.duration:
                    break
                if due > now:
                    self._stop.wait(due - now)
                    continue
                pool.submit(self._one)
                sent += 1

    def start(self) -> "LoadGenerator":
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def answered(self, since: float = 0.0) -> int:
        """Requests sent at or after `since` (seconds from the start) that have an outcome: what a test
        polls for instead of sleeping through a window and hoping the load got through."""
        with self._lock:
            return sum(1 for o in self.result.outcomes if o.at >= since)

    def stop(self) -> LoadResult:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 10)
        return self.result

    def wait(self) -> LoadResult:
        if self._thread is not None:
            self._thread.join(timeout=self.duration + self.timeout + 10)
        return self.result
