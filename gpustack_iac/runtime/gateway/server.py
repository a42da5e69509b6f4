"""A minimal HTTP/1.1 server on asyncio protocols for the gateway's data plane.

llhttp (httptools) parses every request; this module keeps what a proxy needs around it:
keep-alive, request bodies read whole and bounded (a retry on another replica must be able to
resend them), a gate that answers on the request head (authentication, rate limits) before any
body byte is read or `100 Continue` is sent, streamed responses with write backpressure, and
cancellation of the handler when the client disconnects. Requests on one connection are answered
one after the other; pipelined ones are parsed ahead and queued (a bounded number).

Hostile clients: anything llhttp refuses gets 400 and the connection is closed; so do control
bytes and duplicated Authorization/Host fields. Connections past `max_connections` get 503; a
head must arrive within `header_timeout`. A refusal whose body is still on the wire is answered at
once, then the connection is half-closed and what the client still sends is dropped as it arrives
(for at most `_LINGER` seconds) so it receives the answer instead of a reset.

`GatewayRunner` plugs the server into aiohttp's `web.TCPSite`, so the entry point and the tests
start it like any aiohttp runner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import deque
from typing import Any, Awaitable, Callable, cast

import httptools
from aiohttp import web

from gpustack_iac.runtime.gateway.headers import REQUEST_DROP
from gpustack_iac.runtime.gateway.wire import (
    LAST_CHUNK,
    MAX_HEAD_BYTES,
    HttpProtocolError,
    check_target,
    encode_chunk,
    is_chunked,
)

log = logging.getLogger("gpustack_iac.gateway")

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 408: "Request Timeout", 413: "Content Too Large",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}
_NO_BODY_STATUS = frozenset({204, 304})
# While a request is being handled, the next ones are parsed ahead; past these bounds the socket
# stops being read until the connection is free again.
_MAX_QUEUED = 8
_MAX_BUFFERED = 256 * 1024
_LINGER = 2.0  # seconds a refused client may keep sending (discarded) before the connection closes
_LINGER_OVERFLOW = 0.5  # the same past the connection cap, where lingering sockets must not pile up
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REQUEST_DROP = frozenset(name.encode() for name in REQUEST_DROP)


class Answer:
    """A response the server writes itself (a refusal decided on the request head)."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str | None = None, headers: list[str] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def error_answer(status: int, code: str, message: str, headers: list[str] | None = None) -> Answer:
    return Answer(status, _json_error(code, message), "application/json", headers)


class Request:
    """One parsed request: raw target pieces, the headers the gateway acts on, the lines it forwards, the whole body."""

    __slots__ = (
        "method", "path", "query", "version", "host", "authorization", "connection", "body", "peer", "keep_alive",
        "forward", "forwarded_for", "content_length", "chunked", "refusal", "close_after", "authorized",
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
        self.content_length = 0
        self.chunked = False
        self.refusal: Answer | None = None  # answered instead of calling the handler
        self.close_after = False  # the connection closes after this answer
        self.authorized: bool | None = None  # the handler's verdict on the token, kept between the gate and the handler

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0

    def header(self, name: str) -> str | None:
        """A header's value (the first, for a field the gateway forwards), or None."""
        lower = name.lower()
        if lower == "authorization":
            return self.authorization or None
        if lower == "host":
            return self.host or None
        n = len(lower)
        for line in self.forward:
            if line[n : n + 1] == ":" and line[:n].lower() == lower:
                return line[n + 1 :].strip()
        return None


Handler = Callable[[Request, "ServerConnection"], Awaitable[None]]
# Called on every request head before its body is read: an Answer refuses the request.
Gate = Callable[[Request], "Answer | None"]


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing a connection whose remaining input is discarded."""


class ServerConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler, and writes what it answers."""

    def __init__(self, server: "DataPlaneServer") -> None:
        self._server = server
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Request] = deque()  # parsed requests waiting for their turn
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self._eof = False
        self._discarding = False  # input is no longer parsed (refused or broken stream)
        self._overflow = False
        self.idle_since: float | None = None
        self.head_since: float | None = None  # when the head being received began
        # the message being parsed
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._head_parsed = 0
        self._cur: Request | None = None
        self._headers_done = False
        self._nfields = 0
        self._length = b""
        self._codings: list[str] = []
        self._expect = False
        self._seen_host = self._seen_auth = False
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._queued_bytes = 0
        self._continue_owed = False
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
        server = self._server
        if len(server._connections) >= server.max_connections:
            self._overflow = True
            server.refused += 1
            self._keep_alive = False
            self._write_answer(error_answer(503, "too_many_connections", "the gateway is at its connection limit; retry later"))
            self._linger(_LINGER_OVERFLOW)
            return
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) and peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idle_since = self.head_since = self._loop.time()
        server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # Upgrade is hop-by-hop and not offered: the request was forwarded as a plain one, and
            # whatever followed its head is parsed as the next request.
            rest = data[upgrade.args[0]:] if upgrade.args and isinstance(upgrade.args[0], int) else b""
            if rest:
                self.data_received(rest)
                return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HttpProtocolError):
                self._fail(cause.status, str(cause))
            elif not isinstance(cause, _Stop):
                log.error("request parser callback failed", exc_info=cause)
                self._fail(400, "malformed request")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed request: {exc}")
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self._discarding:
            self._fail(431, "request head too large")
        if self._task is None:
            self._next()
        elif not self._reading_paused and (len(self._queue) >= _MAX_QUEUED or self._queued_bytes + self._body_size > _MAX_BUFFERED):
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets the answer when one is in progress.
        self._eof = True
        if self._discarding:
            return False
        return self._task is not None or bool(self._queue)

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

    # --- parser callbacks (httptools) ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self.idle_since = None
        if self.head_since is None:
            self.head_since = self._loop.time()
        self._url = b""
        self._head_parsed = 0
        self._cur = Request("", "", "", "HTTP/1.1", self._peer)
        self._headers_done = False
        self._nfields = 0
        self._length = b""
        self._codings = []
        self._expect = False
        self._seen_host = self._seen_auth = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def _count_head(self, size: int) -> None:
        # data_received's byte count misses a head that arrives whole in one read (the parser has
        # finished it before the count is checked), so the parsed parts are counted as they come.
        self._head_parsed += size
        if self._head_parsed > MAX_HEAD_BYTES:
            raise HttpProtocolError("request head too large", 431)

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp refused control bytes, bare CR/LF, obs-folds and invalid names already; what is left is
        # sorting: what the gateway acts on, and the lines it forwards unchanged.
        if self._headers_done:
            return  # a trailer field (llhttp checked its syntax); trailers are not forwarded
        self._nfields += 1
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        if self._nfields > self._server.max_header_count:
            raise HttpProtocolError(f"more than {self._server.max_header_count} header fields")
        request = self._cur
        assert request is not None
        lower = name.lower()
        value = value.rstrip(b" \t")  # llhttp drops leading whitespace only
        if lower in _REQUEST_DROP:
            if lower == b"host":
                if self._seen_host:
                    raise HttpProtocolError("more than one Host header")
                self._seen_host = True
                request.host = value.decode("latin-1")
            elif lower == b"content-length":
                self._length = value  # llhttp refused a second one and anything but digits
            elif lower == b"transfer-encoding":
                self._codings.append(value.decode("latin-1"))
            elif lower == b"connection":
                request.connection = value.decode("latin-1").lower()
            elif lower == b"expect":
                self._expect = value.lower() == b"100-continue"
            elif lower == b"x-forwarded-for":
                text = value.decode("latin-1")
                request.forwarded_for = text if request.forwarded_for is None else f"{request.forwarded_for}, {text}"
        elif lower == b"authorization":
            if self._seen_auth:
                raise HttpProtocolError("more than one Authorization header")
            self._seen_auth = True
            request.authorization = value.decode("latin-1")
        elif not lower.startswith(b"x-forwarded-"):  # X-Forwarded-Port and friends: only the gateway may claim them
            request.forward.append((name + b": " + value + b"\r\n").decode("latin-1"))

    def on_headers_complete(self) -> None:
        server = self._server
        parser = self._parser
        self._in_head = False
        self._head_bytes = 0
        self.head_since = None
        self._headers_done = True
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise HttpProtocolError(f"unsupported version HTTP/{version}", 505 if version[:1] >= "1" else 400)
        if version == "1.1" and not self._seen_host:
            raise HttpProtocolError("HTTP/1.1 request without Host")  # RFC 9112 3.2: 400
        target = self._url
        check_target(target)
        if target[:1] != b"/":
            scheme, sep, rest = target.partition(b"://")
            if not sep or scheme.lower() not in (b"http", b"https"):
                raise HttpProtocolError("invalid request target")
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
        request = self._cur
        assert request is not None
        request.path, _, request.query = target.decode("ascii").partition("?")
        request.method = parser.get_method().decode("ascii")
        request.version = "HTTP/" + version
        request.keep_alive = parser.should_keep_alive() and not server.shutting_down
        if self._codings:
            if version == "1.0":
                raise HttpProtocolError("Transfer-Encoding on HTTP/1.0")
            request.chunked = is_chunked(self._codings)
        elif self._length:
            request.content_length = int(self._length)
        if parser.should_upgrade() and request.has_body:
            # httptools makes llhttp skip the body of an upgrade request, so the body would be parsed
            # as the next request. Upgrades are not offered (Upgrade is hop-by-hop): refuse the pair.
            raise HttpProtocolError("Upgrade on a request with a body")
        self._body_parts = []
        self._body_size = 0
        if request.has_body:
            # The body must then arrive within the keep-alive timeout: a trickle cannot hold the connection forever.
            self.idle_since = self._loop.time()
        if request.content_length > server.max_body:
            raise HttpProtocolError(f"request body over {server.max_body} bytes", 413)
        refusal: Answer | None = None
        if server.gate is not None:
            try:
                refusal = server.gate(request)
            except Exception:
                log.exception("gateway gate failed on %s %s", request.method, request.path)
                refusal = error_answer(500, "internal_error", "the gateway failed to handle the request")
        if refusal is not None:
            request.refusal = refusal
            if request.has_body:
                # Refused before its body: answer without reading it (the body is discarded unread).
                request.close_after = True
                self._enqueue(request)
                self._cur = None
                self._discarding = True
                raise _Stop()
        elif self._expect and request.has_body:
            if self._task is None and not self._queue:
                self._write_raw(_CONTINUE)
            else:
                self._continue_owed = True  # sent when the requests before this one are answered

    def on_body(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > self._server.max_body:
            raise HttpProtocolError(f"request body over {self._server.max_body} bytes", 413)
        self._body_parts.append(data)

    def on_message_complete(self) -> None:
        request = self._cur
        if request is None:
            return
        parts = self._body_parts
        if parts:
            request.body = parts[0] if len(parts) == 1 else b"".join(parts)
            self._body_parts = []
        self._body_size = 0
        self._cur = None
        self._in_head = True
        self._continue_owed = False
        self._enqueue(request)

    # --- running requests ---------------------------------------------------------------------------
    def _enqueue(self, request: Request) -> None:
        self._queue.append(request)
        self._queued_bytes += len(request.body)

    def _fail(self, status: int, message: str) -> None:
        """Input the server cannot frame: answered in turn, then the connection closes (the stream is out of sync)."""
        if self._discarding:
            return
        self._discarding = True
        request = self._cur if self._cur is not None and self._headers_done else Request("GET", "", "", "HTTP/1.1", self._peer)
        self._cur = None
        request.refusal = error_answer(status, "bad_request" if status < 500 else "not_supported", message)
        request.close_after = True
        self._enqueue(request)

    def _next(self) -> None:
        """Start the next queued request, answering refusals in order; called whenever the connection is free."""
        while self._task is None and self._queue and not self.closed:
            request = self._queue.popleft()
            self._queued_bytes -= len(request.body)
            refusal = request.refusal
            if refusal is None:
                self._begin(request)
                return
            self._request = request
            self._keep_alive = request.keep_alive and not request.close_after and not self._server.shutting_down
            try:
                self._write_answer(refusal)
            except ConnectionResetError:
                return
            finally:
                self._request = None
            if not self._keep_alive:
                self._linger()
                return
        if self._task is None and not self.closed:
            if self._eof and not self._discarding:
                self.transport.close()  # type: ignore[union-attr]
                return
            if self._continue_owed:
                self._continue_owed = False
                self._write_raw(_CONTINUE)
            if self._in_head and self._head_bytes == 0 and self.idle_since is None:
                self.idle_since = self._loop.time()
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]

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
        if not self._keep_alive:
            self.transport.close()  # type: ignore[union-attr]
            return
        self._next()

    def _linger(self, seconds: float = _LINGER) -> None:
        """Half-close after the last answer and discard input for a while, so the client reads the answer, not a reset."""
        self._discarding = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._loop.call_later(seconds, transport.close)

    def _write_answer(self, answer: Answer) -> None:
        self.respond(answer.status, answer.body, answer.content_type, answer.headers)

    def head_timed_out(self) -> None:
        """The head did not arrive within the header timeout: 408 when something was sent, else a silent close."""
        self.head_since = None
        if self._head_bytes == 0 and self._in_head:
            self.transport.close()  # type: ignore[union-attr]
            return
        self._fail(408, "the request head did not arrive in time")
        self._next()

    def _write_raw(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

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

    def __init__(
        self,
        handler: Handler,
        loop: asyncio.AbstractEventLoop,
        *,
        max_body: int,
        gate: Gate | None = None,
        keepalive_timeout: float = 75.0,
        header_timeout: float = 20.0,
        max_connections: int = 4096,
        max_header_count: int = 100,
    ) -> None:
        self.handler = handler
        self.gate = gate
        self.loop = loop
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.max_header_count = max_header_count
        self.shutting_down = False
        self.refused = 0  # connections answered 503 at the connection limit
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
            if conn._task is None and not conn._queue and conn.transport is not None:
                conn.transport.close()

    async def _sweep(self) -> None:
        """Close keep-alive connections idle too long, and connections whose head does not arrive in time."""
        period = max(0.25, min(self.keepalive_timeout / 4, self.header_timeout / 4, 15.0))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for conn in list(self._connections):
                if conn.transport is None or conn.transport.is_closing():
                    continue
                if conn.head_since is not None and now - conn.head_since > self.header_timeout and conn._task is None:
                    conn.head_timed_out()
                elif conn.idle_since is not None and now - conn.idle_since > self.keepalive_timeout and conn._task is None:
                    conn.transport.close()


class GatewayRunner(web.BaseRunner):
    """An aiohttp runner whose server is the data-plane protocol, so `web.TCPSite(runner, host, port)` serves it."""

    __slots__ = ("_start", "_stop", "_handler", "_gate", "_options")

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        gate: Gate | None = None,
        header_timeout: float = 20.0,
        max_connections: int = 4096,
        max_header_count: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._handler = handler
        self._gate = gate
        self._options: dict[str, Any] = {
            "max_body": max_body, "header_timeout": header_timeout, "max_connections": max_connections,
            "max_header_count": max_header_count,
        }
        self._start = start
        self._stop = stop

    async def shutdown(self) -> None:
        pass

    async def _make_server(self) -> Any:
        await self._start()
        return DataPlaneServer(self._handler, asyncio.get_running_loop(), gate=self._gate, **self._options)

    async def _cleanup_server(self) -> None:
        await self._stop()
