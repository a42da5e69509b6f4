"""The autoscaler's metrics with HAProxy underneath.

HAProxy's cumulative counters (`show stat`: backend rows per service, server rows per slot) are
folded into the same counters the Python plane keeps for what it serves itself (held requests,
routers), on every read: `snapshot()` and `/metrics` see one set of numbers. A slot's new counts
are credited to the replica group holding the slot when they are read. In-flight requests are
HAProxy's live figures (current plus queued), added to the Python plane's for the read only.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gpustack_iac.runtime.gateway.haproxy.runtime_api import RuntimeApi, RuntimeApiError, ServerStat
from gpustack_iac.runtime.gateway.metrics import Metrics, ServiceLoad, _Counters
from gpustack_iac.runtime.gateway.routing import Upstream

SlotTable = Callable[[], dict[str, list[Upstream | None]]]


@dataclass
class HaproxyMetrics(Metrics):
    api: RuntimeApi | None = None
    slots: SlotTable | None = None
    _last: dict[tuple[str, str], ServerStat] = field(default_factory=dict)
    log_reader: asyncio.BaseTransport | None = None  # read_log's, closed by whoever started it

    def snapshot(self) -> dict[str, ServiceLoad]:
        with self._live():
            return super().snapshot()

    def render_prometheus(self) -> str:
        with self._live():
            return super().render_prometheus()

    def _live(self) -> "_LiveOverlay":
        rows: list[ServerStat] = []
        if self.api is not None and self.slots is not None:
            try:
                rows = self.api.server_stats()
            except RuntimeApiError:
                rows = []  # between two workers in a reload: counters are cumulative, the next read catches up
        return _LiveOverlay(self, rows)

    def _target(self, row: ServerStat) -> _Counters | None:
        """The counters a `show stat` row feeds: the service's for a backend row, a group's for a slot."""
        service = row.backend[4:]
        if row.server == "BACKEND":
            return self._service(service)
        table = self.slots() if self.slots is not None else {}
        slots = table.get(service, [])
        index = int(row.server[1:]) - 1 if row.server[1:].isdigit() else -1
        up = slots[index] if 0 <= index < len(slots) else None
        return self._group(service, up.group) if up is not None else None

    def fold(self, rows: list[ServerStat]) -> list[tuple[_Counters, int]]:
        """Add what is new since the last read; returns (counters, live in-flight) to overlay."""
        live: list[tuple[_Counters, int]] = []
        for row in rows:
            if not row.backend.startswith("svc_"):
                continue
            before = self._last.get((row.backend, row.server))
            if before is None or row.sessions_total < before.sessions_total:
                before = ServerStat(row.backend, row.server, 0, 0, 0, 0, 0)  # new worker: counters restart
            self._last[(row.backend, row.server)] = row
            target = self._target(row)
            if target is None:
                continue
            target.requests_total += row.sessions_total - before.sessions_total
            target.errors_total += row.errors_5xx - before.errors_5xx
            live.append((target, row.in_flight + row.queued))
        return live


    def observe(self, line: str) -> None:
        """One HAProxy log line (render.LOG_FORMAT) of a request a service backend answered."""
        parts = line.split()
        if len(parts) < 5 or not parts[0].startswith("svc_"):
            return  # the Python plane's own requests are counted by the Python plane
        service, server = parts[0][4:], parts[1]
        try:
            head_ms, total_ms = int(parts[2]), int(parts[3])
        except ValueError:
            return
        # A sampled line (render.LOG_SAMPLE) stands for that many requests; "-" for itself alone.
        weight = int(parts[5]) if len(parts) > 5 and parts[5].isdigit() else 1
        if total_ms >= 0:
            self._service(service).latency.observe(total_ms / 1000, weight)
        if head_ms < 0:
            return  # no response head (a failed connect, a client gone first)
        self.first_byte(service, head_ms / 1000, weight)
        slots = (self.slots() if self.slots is not None else {}).get(service, [])
        index = int(server[1:]) - 1 if server[1:].isdigit() else -1
        up = slots[index] if 0 <= index < len(slots) else None
        if up is not None:
            self._group(service, up.group).latency.observe(head_ms / 1000, weight)


class _LogProtocol(asyncio.DatagramProtocol):
    def __init__(self, metrics: HaproxyMetrics) -> None:
        self.metrics = metrics

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.metrics.observe(data.decode(errors="replace"))


async def read_log(metrics: HaproxyMetrics, path: Path) -> asyncio.BaseTransport:
    """Listen for HAProxy's per-request log datagrams on `path` (0600) until the transport is closed."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _LogProtocol(metrics), sock=sock)
    return transport


class _LiveOverlay:
    """Adds HAProxy's live in-flight counts for the duration of one read."""

    def __init__(self, metrics: HaproxyMetrics, rows: list[ServerStat]) -> None:
        self.metrics, self.rows = metrics, rows
        self.live: list[tuple[_Counters, int]] = []

    def __enter__(self) -> None:
        self.live = self.metrics.fold(self.rows)
        for counters, n in self.live:
            counters.in_flight += n

    def __exit__(self, *exc: object) -> None:
        for counters, n in self.live:
            counters.in_flight -= n

