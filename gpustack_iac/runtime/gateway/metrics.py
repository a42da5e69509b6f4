"""Load counters per service, per replica group and per router member.

Counters are cumulative (the autoscaler turns successive snapshots into rates); `in_flight` and
`waiting` are gauges. Only authenticated traffic that reached a known service is counted, so
scanners hitting the gateway cannot drive the autoscaler.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from gpustack_iac.runtime.scaling.metrics import TTFB_BUCKETS

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class GroupLoad:
    requests_total: int
    in_flight: int
    errors_total: int


@dataclass(frozen=True)
class ServiceLoad:
    requests_total: int
    in_flight: int
    errors_total: int
    per_group: dict[str, GroupLoad]
    waiting: int
    # Cumulative count of times to first byte per bucket of TTFB_BUCKETS (+ one for overflow):
    # the autoscaler's latency metric reads a windowed p90 from successive snapshots.
    ttfb_buckets: tuple[int, ...] = ()


@dataclass(frozen=True)
class MemberLoad:
    requests_total: int
    in_flight: int
    errors_total: int
    ttfb_ewma_seconds: float | None
    cooling_down: bool


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float, weight: int = 1) -> None:
        """`weight` > 1: one sampled observation standing for that many (HAProxy's sampled log)."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += weight
        self.total += seconds * weight
        self.count += weight


@dataclass
class _Counters:
    requests_total: int = 0
    in_flight: int = 0
    errors_total: int = 0
    latency: Histogram = field(default_factory=Histogram)


@dataclass
class _ServiceCounters(_Counters):
    waiting: int = 0
    ttfb: list[int] = field(default_factory=lambda: [0] * (len(TTFB_BUCKETS) + 1))
    groups: dict[str, _Counters] = field(default_factory=dict)


@dataclass
class _MemberCounters:
    requests_total: int = 0
    in_flight: int = 0
    errors_total: int = 0
    ttfb_ewma_seconds: float | None = None
    cooling_down: bool = False


@dataclass
class Metrics:
    _services: dict[str, _ServiceCounters] = field(default_factory=dict)
    _members: dict[tuple[str, str], _MemberCounters] = field(default_factory=dict)
    _rejected: dict[str, int] = field(default_factory=dict)

    # --- service level: once per client request --------------------------------------------------
    def request_started(self, service: str) -> None:
        c = self._service(service)
        c.requests_total += 1
        c.in_flight += 1

    def request_finished(self, service: str, seconds: float, error: bool) -> None:
        c = self._service(service)
        c.in_flight -= 1
        c.latency.observe(seconds)
        if error:
            c.errors_total += 1

    def first_byte(self, service: str, seconds: float, weight: int = 1) -> None:
        """A replica's response head arrived `seconds` after the attempt that got it began."""
        self._service(service).ttfb[bisect.bisect_left(TTFB_BUCKETS, seconds)] += weight

    def waiting_changed(self, service: str, delta: int) -> None:
        self._service(service).waiting += delta

    # --- group level: once per attempt on a replica ----------------------------------------------
    def attempt_started(self, service: str, group: str) -> None:
        g = self._group(service, group)
        g.requests_total += 1
        g.in_flight += 1

    def attempt_finished(self, service: str, group: str, seconds: float, error: bool) -> None:
        g = self._group(service, group)
        g.in_flight -= 1
        g.latency.observe(seconds)
        if error:
            g.errors_total += 1

    # --- router members ------------------------------------------------------------------------
    def member_started(self, router: str, member: str) -> None:
        m = self._member(router, member)
        m.requests_total += 1
        m.in_flight += 1

    def member_finished(self, router: str, member: str, error: bool) -> None:
        m = self._member(router, member)
        m.in_flight -= 1
        if error:
            m.errors_total += 1

    def member_health(self, router: str, member: str, ttfb_ewma_seconds: float | None, cooling_down: bool) -> None:
        m = self._member(router, member)
        m.ttfb_ewma_seconds = ttfb_ewma_seconds
        m.cooling_down = cooling_down

    def member_in_flight(self, router: str, member: str) -> int:
        m = self._members.get((router, member))
        return m.in_flight if m is not None else 0

    def rejected(self, reason: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1

    def forget_service(self, service: str) -> None:
        self._services.pop(service, None)

    # --- readers -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, ServiceLoad]:
        return {
            name: ServiceLoad(
                requests_total=c.requests_total,
                in_flight=c.in_flight,
                errors_total=c.errors_total,
                per_group={g: GroupLoad(gc.requests_total, gc.in_flight, gc.errors_total) for g, gc in c.groups.items()},
                waiting=c.waiting,
                ttfb_buckets=tuple(c.ttfb),
            )
            for name, c in self._services.items()
        }

    def router_snapshot(self) -> dict[str, dict[str, MemberLoad]]:
        out: dict[str, dict[str, MemberLoad]] = {}
        for (router, member), m in self._members.items():
            out.setdefault(router, {})[member] = MemberLoad(
                m.requests_total, m.in_flight, m.errors_total, m.ttfb_ewma_seconds, m.cooling_down
            )
        return out

    def render_prometheus(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        services = sorted(self._services.items())
        groups = [(s, g, gc) for s, c in services for g, gc in sorted(c.groups.items())]
        family("gpustack_service_requests_total", "counter", "Requests received per service.")
        lines += [f"gpustack_service_requests_total{_labels(service=s)} {c.requests_total}" for s, c in services]
        family("gpustack_service_in_flight", "gauge", "Requests in flight per service.")
        lines += [f"gpustack_service_in_flight{_labels(service=s)} {c.in_flight}" for s, c in services]
        family("gpustack_service_errors_total", "counter", "Requests answered with a 5xx per service.")
        lines += [f"gpustack_service_errors_total{_labels(service=s)} {c.errors_total}" for s, c in services]
        family("gpustack_service_waiting", "gauge", "Requests held while a service scales up from zero.")
        lines += [f"gpustack_service_waiting{_labels(service=s)} {c.waiting}" for s, c in services]
        family("gpustack_service_request_seconds", "histogram", "Request latency per service.")
        for s, c in services:
            lines += _histogram("gpustack_service_request_seconds", c.latency, service=s)
        family("gpustack_group_requests_total", "counter", "Attempts sent per replica group.")
        lines += [f"gpustack_group_requests_total{_labels(service=s, group=g)} {gc.requests_total}" for s, g, gc in groups]
        family("gpustack_group_in_flight", "gauge", "Attempts in flight per replica group.")
        lines += [f"gpustack_group_in_flight{_labels(service=s, group=g)} {gc.in_flight}" for s, g, gc in groups]
        family("gpustack_group_errors_total", "counter", "Failed attempts per replica group.")
        lines += [f"gpustack_group_errors_total{_labels(service=s, group=g)} {gc.errors_total}" for s, g, gc in groups]
        family("gpustack_group_request_seconds", "histogram", "Attempt latency per replica group.")
        for s, g, gc in groups:
            lines += _histogram("gpustack_group_request_seconds", gc.latency, service=s, group=g)
        members = sorted(self._members.items())
        family("gpustack_router_member_requests_total", "counter", "Requests sent to each router member.")
        lines += [f"gpustack_router_member_requests_total{_labels(router=r, member=m)} {mc.requests_total}" for (r, m), mc in members]
        family("gpustack_router_member_errors_total", "counter", "Failed requests per router member.")
        lines += [f"gpustack_router_member_errors_total{_labels(router=r, member=m)} {mc.errors_total}" for (r, m), mc in members]
        family("gpustack_router_member_cooling_down", "gauge", "1 while a router member is cooled down.")
        lines += [f"gpustack_router_member_cooling_down{_labels(router=r, member=m)} {int(mc.cooling_down)}" for (r, m), mc in members]
        family("gpustack_gateway_rejected_total", "counter", "Requests refused before reaching a service, by reason.")
        lines += [f"gpustack_gateway_rejected_total{_labels(reason=k)} {v}" for k, v in sorted(self._rejected.items())]
        return "\n".join(lines) + "\n"

    def _service(self, service: str) -> _ServiceCounters:
        c = self._services.get(service)
        if c is None:
            c = self._services[service] = _ServiceCounters()
        return c

    def _group(self, service: str, group: str) -> _Counters:
        groups = self._service(service).groups
        g = groups.get(group)
        if g is None:
            g = groups[group] = _Counters()
        return g

    def _member(self, router: str, member: str) -> _MemberCounters:
        m = self._members.get((router, member))
        if m is None:
            m = self._members[(router, member)] = _MemberCounters()
        return m


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _histogram(name: str, h: Histogram, **labels: str) -> list[str]:
    lines: list[str] = []
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, h.counts):
        cumulative += count
        lines.append(f"{name}_bucket{_labels(**labels, le=repr(bound))} {cumulative}")
    lines.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {h.count}")
    lines.append(f"{name}_sum{_labels(**labels)} {h.total}")
    lines.append(f"{name}_count{_labels(**labels)} {h.count}")
    return lines
