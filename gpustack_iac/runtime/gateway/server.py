"""A minimal HTTP/1.1 server on asyncio protocols for the gateway's data plane.

aiohttp's server machinery was most of the gateway's per-request CPU; the data plane needs only a
fraction of it: keep-alive, Content-Length and chunked request bodies (read whole, bounded: a
retry on another replica must be able to resend them), `Expect: 100-continue`, streamed responses
with write backpressure, and cancellation of the handler when the client disconnects. Requests on
one connection are handled one after the other (a pipelined request waits in the buffer).

`GatewayRunner` plugs the server into aiohttp's `web.TCPSite`, so the entry point and the tests
start it like any aiohttp runner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any, Awaitable, Callable, cast

from aiohttp import web

from gpustack_iac.runtime.gateway.wire import (
    CHUNKED,
    LAST_CHUNK,
    LENGTH,
    MAX_HEAD_BYTES,
    NO_BODY,
    ChunkedDecoder,
    HttpProtocolError,
    encode_chunk,
    is_chunked,
    parse_content_length,
    head_lines,
)
from gpustack_iac.runtime.gateway.headers import REQUEST_DROP

log = logging.getLogger("gpustack_iac.gateway")

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Content Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}
_NO_BODY_STATUS = frozenset({204, 304})
# Bytes a busy connection may buffer (a pipelined next request) before the socket stops being read.
_MAX_BUFFERED = 256 * 1024


class Request:
    """One parsed request: raw target pieces, the headers the gateway acts on, the lines it forwards, the whole body."""

    __slots__ = (
        "method", "path", "query", "version", "host", "authorization", "connection", "body", "peer", "keep_alive",
        "forward", "forwarded_for",
    )

    def __init__(self, method: str, path: str, query: str, version: str, peer: str | None) -> None:
        self.method = method
        self.path = path  # raw, still percent-encoded
        self.query = query  # raw, without the "?"
        self.version = version
        self.peer = peer
        self.host = ""
        self.authorization = ""
        self.connection = ""  # the Connection header, lower-cased
        self.body = b""
        self.keep_alive = version == "HTTP/1.1"
        # Header lines ("Name: value\r\n") to forward as they are: every header except hop-by-hop and
        # framing fields, Host, Expect, Authorization and X-Forwarded-*, which the proxy decides on.
        self.forward: list[str] = []
        self.forwarded_for: str | None = None  # X-Forwarded-For values the client sent, joined


Handler = Callable[[Request, "ServerConnection"], Awaitable[None]]


def parse_request_head(head: bytes, peer: str | None) -> tuple[Request, int, int, bool]:
    """(request without body, body framing, Content-Length, wants 100-continue)."""
    lines = head_lines(head)
    start = lines[0]
    parts = start.split(" ")
    if len(parts) != 3:
        raise HttpProtocolError(f"invalid request line {start[:80]!r}")
    method, target, version = parts
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        raise HttpProtocolError(f"unsupported version {version[:20]!r}", 505)
    if not method or not _TOKEN_CHARS.issuperset(method):
        raise HttpProtocolError(f"invalid method {method[:20]!r}")
    if not target.startswith("/"):
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise HttpProtocolError(f"invalid request target {target[:80]!r}")
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    path, _, query = target.partition("?")
    forward: list[str] = []
    request = Request(method, path, query, version, peer)
    lengths: list[str] = []
    codings: list[str] = []
    expect = False
    # One pass sorts every header: what the gateway acts on, and the lines it forwards unchanged
    # (the same pass that a separate rewrite step would repeat per request).
    for line in lines[1:]:
        name, _, value = line.partition(":")
        lower = name.lower()
        if lower in REQUEST_DROP:
            value = value.strip(" \t")
            if lower == "host":
                request.host = value
            elif lower == "content-length":
                lengths.append(value)
            elif lower == "transfer-encoding":
                codings.append(value)
            elif lower == "connection":
                request.connection = value.lower()
            elif lower == "expect":
                expect = value.lower() == "100-continue"
            elif lower == "x-forwarded-for":
                request.forwarded_for = value if request.forwarded_for is None else f"{request.forwarded_for}, {value}"
        elif lower == "authorization":
            request.authorization = value.strip(" \t")
        elif not lower.startswith("x-forwarded-"):  # X-Forwarded-Port and friends: only the gateway may claim them
            forward.append(line + "\r\n")
    request.forward = forward
    if request.connection:
        if "close" in request.connection:
            request.keep_alive = False
        elif version == "HTTP/1.0" and "keep-alive" in request.connection:
            request.keep_alive = True
    if codings:
        if lengths or version == "HTTP/1.0":
            raise HttpProtocolError("Transfer-Encoding with Content-Length or on HTTP/1.0")
        is_chunked(codings)
        return request, CHUNKED, 0, expect
    if lengths:
        length = parse_content_length(lengths)
        return request, (LENGTH if length else NO_BODY), length, expect and length > 0
    return request, NO_BODY, 0, False


class ServerConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler, and writes what it answers."""

    def __init__(self, server: "DataPlaneServer") -> None:
        self._server = server
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._buf = b""
        self._pending: tuple[Request, int, int] | None = None  # head parsed, body still arriving
        self._decoder: ChunkedDecoder | None = None
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self._eof = False
        self.idle_since: float | None = None
        # the response being written
        self._request: Request | None = None
        self._started = False
        self._chunked = False
        self._no_body = False
        self._keep_alive = True

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) and peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idle_since = self._loop.time()
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if self._task is not None:
            if len(self._buf) > _MAX_BUFFERED and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        self._parse()

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets the answer when one is in progress.
        self._eof = True
        return self._task is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server._connections.discard(self)
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # the client left: stop the upstream work too
        self._wake_drain()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # --- reading requests ----------------------------------------------------------------------------
    def _parse(self) -> None:
        while self._task is None and not self.closed:
            pending = self._pending
            if pending is None:
                buf = self._buf
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        self._reject(431, "request head too large")
                    return
                try:
                    request, kind, length, expect = parse_request_head(buf[:end], self._peer)
                except HttpProtocolError as exc:
                    self._reject(exc.status, str(exc))
                    return
                self._buf = buf[end + 4 :]
                if length > self._server.max_body:
                    self._reject(413, f"request body over {self._server.max_body} bytes")
                    return
                pending = self._pending = (request, kind, length)
                self._body_parts = []
                self._body_size = 0
                if kind == CHUNKED:
                    self._decoder = ChunkedDecoder()
                if expect and not self._buf:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
            request, kind, length = pending
            if kind == LENGTH:
                # Pieces are collected in a list: appending to one bytes object would copy the body
                # over and over (quadratic in the number of reads for a large upload).
                if self._buf:
                    self._body_parts.append(self._buf)
                    self._body_size += len(self._buf)
                    self._buf = b""
                if self._body_size < length:
                    return
                parts = self._body_parts
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                self._body_parts = []
                self._body_size = 0
                request.body = body[:length]
                self._buf = body[length:]
            elif kind == CHUNKED:
                decoder = self._decoder
                assert decoder is not None
                try:
                    chunks, tail = decoder.feed(self._buf)
                except HttpProtocolError as exc:
                    self._reject(400, f"invalid chunked body: {exc}")
                    return
                self._buf = tail
                for chunk in chunks:
                    self._body_size += len(chunk)
                    self._body_parts.append(chunk)
                if self._body_size > self._server.max_body:
                    self._reject(413, f"request body over {self._server.max_body} bytes")
                    return
                if not decoder.done:
                    return
                request.body = b"".join(self._body_parts)
                self._body_parts = []
                self._decoder = None
            self._pending = None
            self._begin(request)

    def _begin(self, request: Request) -> None:
        self.idle_since = None
        self._request = request
        self._started = False
        self._chunked = False
        self._no_body = False
        self._keep_alive = request.keep_alive and not self._server.shutting_down
        self._task = self._loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            await self._server.handler(request, self)
            if not self._started:
                raise RuntimeError("the handler returned without answering")
        except asyncio.CancelledError:
            self._keep_alive = False
            self.abort()
            return
        except ConnectionResetError:
            self._keep_alive = False
        except Exception:
            log.exception("gateway handler failed on %s %s", request.method, request.path)
            self._keep_alive = False
            if not self._started and not self.closed:
                self.respond(500, _json_error("internal_error", "the gateway failed to handle the request"), "application/json")
            else:
                self.abort()
        finally:
            self._task = None
            self._request = None
        if self.closed:
            return
        if not self._keep_alive or self._eof:
            self.transport.close()  # type: ignore[union-attr]
            return
        self.idle_since = self._loop.time()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if self._buf:
            self._parse()

    def _reject(self, status: int, message: str) -> None:
        """A request the server cannot frame: answer once and close (the stream is no longer in sync)."""
        self._keep_alive = False
        self._request = None
        self._started = False
        self._no_body = False
        self.respond(status, _json_error("bad_request" if status < 500 else "not_supported", message), "application/json")
        self.transport.close()  # type: ignore[union-attr]

    # --- writing responses (called by the handler) -----------------------------------------------------
    def respond(
        self, status: int, body: bytes, content_type: str | None = None, headers: list[str] | None = None, reason: str | None = None
    ) -> None:
        """A whole response in one write."""
        lines = headers if headers is not None else []
        if content_type is not None:
            lines = [*lines, "Content-Type: " + content_type]
        no_body = status in _NO_BODY_STATUS or (self._request is not None and self._request.method == "HEAD")
        head = self._head(status, reason, lines, len(body) if status not in _NO_BODY_STATUS else -2)
        self._started = True
        self._write(head + body if not no_body and body else head)

    def start(self, status: int, reason: str | None, headers: list[str], length: int) -> None:
        """Send the head of a streamed response; `length` < 0 when unknown (chunked, or until close on HTTP/1.0)."""
        no_body = status in _NO_BODY_STATUS or (self._request is not None and self._request.method == "HEAD") or 100 <= status < 200
        self._no_body = no_body
        if no_body:
            framing = length if length >= 0 and status not in _NO_BODY_STATUS else -2
        elif length >= 0:
            framing = length
        elif self._request is not None and self._request.version == "HTTP/1.1":
            framing = -1
            self._chunked = True
        else:
            framing = -2
            self._keep_alive = False  # the end of the body is the end of the connection
        self._started = True
        self._write(self._head(status, reason, headers, framing))

    def write(self, data: bytes) -> None:
        if self._no_body or not data:
            return
        self._write(encode_chunk(data) if self._chunked else data)

    def finish(self) -> None:
        if self._chunked:
            self._write(LAST_CHUNK)
            self._chunked = False

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full (a slow reader must not grow our memory)."""
        if self.closed:
            raise ConnectionResetError("the client disconnected")
        if not self._write_paused:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None
        if self.closed:
            raise ConnectionResetError("the client disconnected")

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def abort(self) -> None:
        """Cut the response short: the client sees it incomplete (no final chunk, or fewer bytes than announced)."""
        self._keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("the client disconnected")
        transport.write(data)

    def _head(self, status: int, reason: str | None, headers: list[str], framing: int) -> bytes:
        """Status line and headers; framing: a length, -1 for chunked, -2 for none."""
        if reason is None:
            reason = _REASONS.get(status, "")
        parts = ["HTTP/1.1 %d %s" % (status, reason), *headers]
        if framing >= 0:
            parts.append("Content-Length: %d" % framing)
        elif framing == -1:
            parts.append("Transfer-Encoding: chunked")
        if not self._keep_alive:
            parts.append("Connection: close")
        elif self._request is not None and self._request.version == "HTTP/1.0":
            parts.append("Connection: keep-alive")
        parts.append("\r\n")
        return "\r\n".join(parts).encode("latin-1")

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _json_error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class DataPlaneServer:
    """Protocol factory handed to `loop.create_server`, with aiohttp's server shutdown hooks."""

    def __init__(self, handler: Handler, loop: asyncio.AbstractEventLoop, *, max_body: int, keepalive_timeout: float = 75.0) -> None:
        self.handler = handler
        self.loop = loop
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.shutting_down = False
        self._connections: set[ServerConnection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> ServerConnection:
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        return ServerConnection(self)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def pre_shutdown(self) -> None:
        self.shutting_down = True
        self._close_idle()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Let in-flight requests finish (up to `timeout`), then cancel what is left and close every connection."""
        self.shutting_down = True
        self._close_idle()
        tasks = [c._task for c in self._connections if c._task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for conn in list(self._connections):
            if conn._task is not None:
                conn._task.cancel()
            if conn.transport is not None:
                conn.transport.close()
        tasks = [t for t in tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    def _close_idle(self) -> None:
        for conn in list(self._connections):
            if conn._task is None and conn.transport is not None:
                conn.transport.close()

    async def _sweep(self) -> None:
        """Close keep-alive connections idle (or stuck in a partial head) longer than the keep-alive timeout."""
        period = max(1.0, min(self.keepalive_timeout / 4, 15.0))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for conn in list(self._connections):
                if conn.idle_since is not None and now - conn.idle_since > self.keepalive_timeout and conn.transport is not None:
                    conn.transport.close()


class GatewayRunner(web.BaseRunner):
    """An aiohttp runner whose server is the data-plane protocol, so `web.TCPSite(runner, host, port)` serves it."""

    __slots__ = ("_start", "_stop", "_handler", "_max_body")

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._handler = handler
        self._max_body = max_body
        self._start = start
        self._stop = stop

    async def shutdown(self) -> None:
        pass

    async def _make_server(self) -> Any:
        await self._start()
        return DataPlaneServer(self._handler, asyncio.get_running_loop(), max_body=self._max_body)

    async def _cleanup_server(self) -> None:
        await self._stop()
