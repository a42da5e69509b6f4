"""Least-outstanding-requests balancing over every ready upstream of a service, whatever its group."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack_iac.runtime.gateway.routing import Upstream


@dataclass
class Balancer:
    """Counts requests in flight per upstream URL and picks the least loaded one.

    Keyed by URL rather than by replica id because two services never share a replica port,
    and the URL is what the connection pool keys on too. Ties go round-robin so that an idle
    service still spreads its requests over every replica.
    """

    _outstanding: dict[str, int] = field(default_factory=dict)
    _turn: int = 0

    def pick(self, upstreams: tuple[Upstream, ...], exclude: frozenset[str] = frozenset()) -> Upstream | None:
        best: list[Upstream] = []
        least = -1
        for upstream in upstreams:
            if upstream.url in exclude:
                continue
            load = self._outstanding.get(upstream.url, 0)
            if least < 0 or load < least:
                least = load
                best = [upstream]
            elif load == least:
                best.append(upstream)
        if not best:
            return None
        self._turn += 1
        return best[self._turn % len(best)]

    def acquire(self, upstream: Upstream) -> None:
        self._outstanding[upstream.url] = self._outstanding.get(upstream.url, 0) + 1

    def release(self, upstream: Upstream) -> None:
        left = self._outstanding.get(upstream.url, 0) - 1
        if left > 0:
            self._outstanding[upstream.url] = left
        else:
            # Drop idle entries so replicas that come and go do not grow the map forever.
            self._outstanding.pop(upstream.url, None)

    def outstanding(self, upstream: Upstream) -> int:
        return self._outstanding.get(upstream.url, 0)

    def total(self, upstreams: tuple[Upstream, ...]) -> int:
        return sum(self._outstanding.get(u.url, 0) for u in upstreams)
