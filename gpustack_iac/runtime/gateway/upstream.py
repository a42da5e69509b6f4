"""The gateway's own pooled HTTP/1.1 client to the replicas, on asyncio protocols.

aiohttp's ClientSession cost about 140 µs of CPU per proxied request; this client writes the
request head and body in one write, parses responses with llhttp (httptools), and hands body
bytes to the proxy as they arrive (Content-Length, chunked or until close), with
read-side backpressure so a slow client cannot make the gateway buffer a fast replica's output.
One connection carries one request at a time (no pipelining) and goes back to a LIFO idle stack
per upstream when its response was read to the end.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from gpustack_iac.runtime.gateway.headers import RESPONSE_DROP
from gpustack_iac.runtime.gateway.settings import GatewaySettings
from gpustack_iac.runtime.gateway.wire import (
    CHUNKED,
    LENGTH,
    MAX_HEAD_BYTES,
    NO_BODY,
    UNTIL_CLOSE,
    HttpProtocolError,
    is_chunked,
)

_RESPONSE_DROP = frozenset(name.encode() for name in RESPONSE_DROP)
# Body bytes queued for a slow client before the replica's socket stops being read.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024

_IDLE, _HEAD, _BODY, _DONE = range(4)


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing a connection that will not be reused."""


class UpstreamError(Exception):
    """An attempt on one replica failed."""

    retryable = False  # True only when the replica cannot have seen (or acted on) the request


class ConnectFailed(UpstreamError):
    """Nothing accepted the connection (refused, unreachable)."""

    retryable = True


class ConnectTimedOut(UpstreamError):
    retryable = True


class ResetBeforeResponse(UpstreamError):
    """The connection closed before a single response byte arrived (often a pooled connection the replica had closed)."""

    retryable = True


class ReadTimedOut(UpstreamError):
    """The replica went silent for longer than the read timeout."""


class BadResponse(UpstreamError):
    """The replica broke HTTP framing, or closed in the middle of its response."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one upstream URL points: connection key and what goes into the request line."""

    host: str
    port: int
    tls: bool
    base_path: str  # prefix of every request path ("" for a bare host:port URL)
    host_header: str


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstream URL {url!r} is not http(s)://host[:port][/path]")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    default = port == (443 if tls else 80)
    return Target(host, port, tls, parts.path.rstrip("/"), shown if default else f"{shown}:{port}")


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a replica; holds the state of the response being read."""

    def __init__(self, pool: "UpstreamPool", url: str) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.url = url
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._phase = _IDLE
        self._got_bytes = False
        self._head_only = False
        self._head_waiter: asyncio.Future[None] | None = None
        self._kind = NO_BODY
        self._parser = httptools.HttpResponseParser(self)
        self._head_bytes = 0
        self._reason = b""
        self._passthrough: list[str] = []
        self._listed: set[str] | None = None
        self._codings: list[str] = []
        self._length = -1
        self._interim = False
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._reading_paused = False
        self._body_waiter: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._reusable = True
        self._last_rx = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.reason = ""
        self.content_length = -1  # the response's Content-Length, -1 when it sent none
        self.content_type = ""
        self.client_headers: list[str] = []  # "Name: value" lines to relay to the client

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A small request must not wait for Nagle's timer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        phase = self._phase
        if phase == _HEAD:
            self._got_bytes = True
            self._head_bytes += len(data)
        elif phase != _BODY:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self._reusable = False
            if phase == _IDLE:
                self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reusable = False  # 101: what follows is not HTTP any more
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HttpProtocolError):
                self._fail(BadResponse(f"invalid response: {cause}"))
            elif not isinstance(cause, _Stop):
                self._fail(BadResponse("invalid response"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid response: {exc}"))
        if self._phase == _HEAD and self._head_bytes > MAX_HEAD_BYTES:
            self._fail(BadResponse("invalid response: response head too large"))

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._reusable = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._phase == _HEAD:
            if self._got_bytes:
                self._fail(BadResponse("the replica closed the connection in the middle of the response head"))
            else:
                self._fail(ResetBeforeResponse("the replica closed the connection before answering"))
        elif self._phase == _BODY:
            if self._kind == UNTIL_CLOSE:
                self._finish_body()
            else:
                self._fail(BadResponse("the replica closed the connection in the middle of the response body"))
        self._pool._forget(self)

    # --- one request ---------------------------------------------------------------------------------
    def send(self, data: bytes, head_only: bool) -> asyncio.Future[None]:
        """Write a whole request; the returned future resolves when the response head arrived."""
        assert self.transport is not None and self._phase == _IDLE
        self._phase = _HEAD
        self._head_only = head_only
        self._got_bytes = False
        self._head_bytes = 0
        self._chunks.clear()
        self._queued = 0
        self._error = None
        self.status = 0
        waiter = self._head_waiter = self._loop.create_future()
        self._last_rx = self._loop.time()
        if self._timer is None and self._pool.read_timeout is not None:
            self._timer = self._loop.call_at(self._last_rx + self._pool.read_timeout, self._on_timer)
        self.transport.write(data)
        return waiter

    @property
    def body_complete(self) -> bool:
        return self._phase == _DONE

    def take_buffered(self) -> bytes:
        """Every body byte received so far (the whole body once `body_complete`)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._queued = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def read(self) -> bytes:
        """The body bytes that arrived since the last call (waits for some); b"" at the end of the body."""
        while True:
            if self._chunks:
                return self.take_buffered()
            if self._phase == _DONE:
                return b""
            if self._error is not None:
                raise self._error
            waiter = self._body_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._body_waiter = None

    async def read_all(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = await self.read()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def release(self) -> None:
        """Hand the connection back: to the pool when its response was read whole, else closed."""
        if self._phase == _DONE and self._reusable and not self.closed:
            self._phase = _IDLE
            self._pool._put_idle(self)
        else:
            self.close()

    def close(self) -> None:
        self._reusable = False
        if self.transport is not None and not self.closed:
            # abort, not close: a cancelled stream must reach the replica as a disconnect at once.
            self.transport.abort()

    # --- parser callbacks (httptools) ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._phase != _HEAD:
            # A second response to one request: refuse the rest of the stream.
            self._reusable = False
            raise _Stop()
        self._reason = b""
        self._passthrough = []
        self._listed = None
        self._codings = []
        self._length = -1
        self.content_type = ""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # The client's copy of the headers is built here, from the fields as received: hop-by-hop
        # fields and framing stay on this hop (the server frames the response itself).
        if self._phase != _HEAD:
            return  # a trailer, not relayed
        lower = name.lower()
        value = value.rstrip(b" \t")  # llhttp drops leading whitespace only
        if lower in _RESPONSE_DROP:
            if lower == b"content-length":
                self._length = int(value)  # llhttp refused duplicates and anything but digits
            elif lower == b"transfer-encoding":
                self._codings.append(value.decode("latin-1"))
            elif lower == b"connection":
                tokens = value.decode("latin-1").lower()
                if tokens != "keep-alive" and tokens != "close":
                    self._listed = (self._listed or set()) | {t.strip() for t in tokens.split(",") if t.strip()}
            return
        line = (name + b": " + value).decode("latin-1")
        if lower == b"content-type":
            self.content_type = line[len(name) + 2 :]
        self._passthrough.append(line)

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise HttpProtocolError(f"unsupported version HTTP/{version}")
        if status == 101:
            # The gateway never forwards Upgrade (hop-by-hop), so a switch was not asked for: relayed,
            # it left the client waiting on a connection that no longer speaks HTTP. 502 instead.
            raise HttpProtocolError("unsolicited 101 Switching Protocols")
        if 100 <= status < 200:
            self._interim = True  # interim answers (100 Continue, 103 Early Hints) are not relayed
            return
        self._interim = False
        self.status = status
        self.reason = self._reason.decode("latin-1")
        passthrough = self._passthrough
        listed = self._listed
        if listed:
            passthrough = [line for line in passthrough if line.partition(":")[0].lower() not in listed]
        self.client_headers = passthrough
        length = self.content_length = self._length
        if not parser.should_keep_alive():
            self._reusable = False
        self._phase = _BODY
        if self._head_only or status in (101, 204, 304):
            self._kind = NO_BODY
            if status == 101 or self._head_only:
                # llhttp cannot be told a HEAD answer has no body: stop here and never reuse the connection.
                self._reusable = False
                self._finish_body()
                self._resolve_head()
                raise _Stop()
        elif self._codings:
            is_chunked(self._codings)  # another final coding cannot be delimited: refused
            self._kind = CHUNKED
        elif length >= 0:
            self._kind = LENGTH
        else:
            self._kind = UNTIL_CLOSE
            self._reusable = False
        self._resolve_head()

    def on_body(self, data: bytes) -> None:
        self._push(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._phase == _BODY:
            self._finish_body()

    def _resolve_head(self) -> None:
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _push(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def _finish_body(self) -> None:
        self._phase = _DONE
        self._wake_body()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is not None:
            return  # the first cause is the one worth reporting
        self._error = error
        self._reusable = False
        head = self._head_waiter
        self._head_waiter = None
        if head is not None and not head.done():
            head.set_exception(error)
        self._phase = _BODY if self._phase == _HEAD else self._phase
        if self._phase == _BODY:
            self._kind = NO_BODY  # nothing more will be accepted
        self._wake_body()
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or self._phase not in (_HEAD, _BODY) or self._error is not None:
            return
        timeout = self._pool.read_timeout
        assert timeout is not None
        now = self._loop.time()
        if self._reading_paused:
            self._last_rx = now  # silence while our own reader is paused (a slow client) is not the replica's fault
        elif now - self._last_rx >= timeout:
            self._fail(ReadTimedOut(f"no data from the replica for {timeout:g}s"))
            return
        self._timer = self._loop.call_at(self._last_rx + timeout, self._on_timer)


class UpstreamPool:
    """Keep-alive connections per upstream URL, with a total and a per-upstream limit."""

    def __init__(self, settings: GatewaySettings, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.read_timeout = settings.read_timeout
        self._connect_timeout = settings.connect_timeout
        self._keepalive = settings.keepalive_timeout
        self._limit = settings.max_connections
        self._limit_per_upstream = settings.max_connections_per_upstream
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._targets: dict[str, Target] = {}
        self._open_total = 0
        self._open_per: dict[str, int] = {}
        self._live: set[UpstreamConnection] = set()
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.Task[None] | None = None
        self._tls: ssl.SSLContext | None = None
        self._closing = False

    def start(self) -> None:
        self._sweeper = self.loop.create_task(self._sweep())

    async def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        for conn in list(self._live):
            conn.close()
        for waiter in self._slot_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the gateway is shutting down"))
        self._idle.clear()

    def target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = parse_target(url)
        return target

    def take_idle(self, url: str) -> UpstreamConnection | None:
        """A pooled connection to `url` that is still open and fresh, or None."""
        stack = self._idle.get(url)
        if not stack:
            return None
        now = self.loop.time()
        while stack:
            conn = stack.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                if now - conn.idle_since < self._keepalive:
                    return conn
            conn.close()
        return None

    async def connect(self, url: str) -> UpstreamConnection:
        """A new connection to `url` (waits for a free slot when a connection limit is reached)."""
        target = self.target(url)
        while self._open_total >= self._limit or (
            self._limit_per_upstream and self._open_per.get(url, 0) >= self._limit_per_upstream
        ):
            if self._drop_one_idle(url):
                continue
            waiter = self.loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._slot_waiters:
                    self._slot_waiters.remove(waiter)
            idle = self.take_idle(url)
            if idle is not None:
                return idle
        self._open_total += 1
        self._open_per[url] = self._open_per.get(url, 0) + 1
        conn = UpstreamConnection(self, url)
        self._live.add(conn)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self.loop.create_connection(
                    lambda: conn, target.host, target.port,
                    ssl=self._tls_context() if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
        except TimeoutError as exc:
            self._discard(conn)
            raise ConnectTimedOut(f"connect to {target.host}:{target.port} timed out") from exc
        except OSError as exc:
            self._discard(conn)
            raise ConnectFailed(f"connect to {target.host}:{target.port} failed: {exc.strerror or exc}") from exc
        except BaseException:
            self._discard(conn)
            raise
        return conn

    def idle_count(self, url: str) -> int:
        return sum(1 for c in self._idle.get(url, ()) if not c.closed)

    # --- bookkeeping called by connections --------------------------------------------------------------
    def _put_idle(self, conn: UpstreamConnection) -> None:
        if self._closing:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.url, []).append(conn)
        self._wake_slot()

    def _forget(self, conn: UpstreamConnection) -> None:
        if conn in self._live:
            self._discard(conn)

    def _discard(self, conn: UpstreamConnection) -> None:
        if conn not in self._live:
            return
        self._live.discard(conn)
        conn.close()
        self._open_total -= 1
        left = self._open_per.get(conn.url, 1) - 1
        if left > 0:
            self._open_per[conn.url] = left
        else:
            self._open_per.pop(conn.url, None)
        self._wake_slot()

    def _wake_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _drop_one_idle(self, prefer_not: str) -> bool:
        """At the total limit, an idle connection to another upstream makes room for a new one."""
        for url, stack in self._idle.items():
            if url != prefer_not and stack:
                self._discard(stack.pop(0))
                return True
        return False

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def _sweep(self) -> None:
        """Close idle connections older than the keep-alive timeout, so replicas that went away free their sockets."""
        period = max(1.0, min(self._keepalive / 2, 30.0))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for url in list(self._idle):
                stack = self._idle[url]
                fresh = [c for c in stack if not c.closed and now - c.idle_since < self._keepalive]
                for conn in stack:
                    if conn not in fresh:
                        self._discard(conn)
                if fresh:
                    self._idle[url] = fresh
                else:
                    del self._idle[url]
