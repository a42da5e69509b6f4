"""SSE load for bench/gateway.py: a cheap event streamer (the upstream) and a stream client (the load).

Both are plain asyncio protocols/streams rather than aiohttp, so that at 2,000 streams the upstream
and the client stay far from being the bottleneck and what the bench measures is the proxy between
them (the upstream writes one chunk per event; the client decodes chunked bodies and counts events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qs, urlsplit

DONE = b"data: [DONE]\n\n"


class StreamerProtocol(asyncio.Protocol):
    """`GET /...?n=N&interval=S`: a chunked `text/event-stream` of N events, the first at once, then one
    every S seconds, then `[DONE]`; anything else gets a 3-byte 200. Keep-alive, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.timer is not None:
            return
        request_line = self.buffer.split(b"\r\n", 1)[0].decode("latin-1")
        self.buffer = self.buffer[end + 4 :]
        target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
        query = parse_qs(urlsplit(target).query)
        if not urlsplit(target).path.endswith("/sse"):
            self._write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
            return
        n = int(query.get("n", ["10"])[0])
        interval = float(query.get("interval", ["1"])[0])
        self._write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
        self._event(0, n, interval)

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _event(self, i: int, n: int, interval: float) -> None:
        self.timer = None
        if self.transport is None:
            return
        if i >= n:
            self._write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(DONE), DONE))
            return
        event = b'data: {"token": %d}\n\n' % i
        self._write(b"%x\r\n%s\r\n" % (len(event), event))
        self.timer = asyncio.get_running_loop().call_later(interval, self._event, i + 1, n, interval)


async def serve_streamer(host: str = "127.0.0.1", port: int = 0) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(StreamerProtocol, host, port, backlog=8192)


# --------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------


@dataclass
class StreamStats:
    streams: int
    completed: int = 0
    errors: int = 0
    events: int = 0
    ttfb_s: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def ttfb_p99_ms(self) -> float:
        if not self.ttfb_s:
            return float("nan")
        ordered = sorted(self.ttfb_s)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _read_body_events(reader: asyncio.StreamReader, chunked: bool, on_first: Callable[[], None]) -> tuple[int, bool]:
    """Events read and whether `[DONE]` came; the body de-chunked so that a proxy's re-chunking is invisible."""
    events, done, pending, first = 0, False, b"", True
    while True:
        if chunked:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            piece = (await reader.readexactly(size + 2))[:-2]
        else:
            piece = await reader.read(65536)
            if not piece:
                break
        pending += piece
        while b"\n\n" in pending:
            event, pending = pending.split(b"\n\n", 1)
            if event.startswith(b"data:"):
                if first:
                    on_first()
                    first = False
                if event == DONE[:-2]:
                    done = True
                else:
                    events += 1
    return events, done


async def _one_stream(host: str, port: int, request: bytes, stats: StreamStats, timeout: float) -> None:
    started = time.perf_counter()
    writer: asyncio.StreamWriter | None = None

    def first() -> None:
        stats.ttfb_s.append(time.perf_counter() - started)

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise ValueError(f"status {head[9:12].decode('latin-1')}")
            events, done = await _read_body_events(reader, b"chunked" in head.lower(), first)
        stats.events += events
        stats.completed += done
        if not done:
            raise ValueError("ended before [DONE]")
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        stats.errors += 1
        kind = type(exc).__name__ if not isinstance(exc, ValueError) else str(exc)
        stats.error_kinds[kind] = stats.error_kinds.get(kind, 0) + 1
    finally:
        if writer is not None:
            writer.close()


async def run_streams(host: str, port: int, path: str, token: str | None, streams: int, timeout: float) -> StreamStats:
    """`streams` SSE streams started at the same moment; each is timed from its connect to its first event."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode()
    stats = StreamStats(streams)
    await asyncio.gather(*(_one_stream(host, port, request, stats, timeout) for _ in range(streams)))
    return stats
