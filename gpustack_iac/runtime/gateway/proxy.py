"""The gateway's data plane: a reverse proxy in front of every service's replicas.

Routing: `/services/<name>/<path>`, `Host: <name>.<domain>`, and OpenAI-compatible `/v1/*`
by the body's `model` (a service's model or a router alias). Retries happen only before the
first byte reaches the client; after that a failure can only cut the response short.

It runs on its own HTTP/1.1 server (`server.py`) and upstream client (`upstream.py`) rather
than aiohttp's: those two stacks were most of the CPU a proxied request cost.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass

from aiohttp import web

from gpustack_iac.runtime.gateway.balancer import Balancer
from gpustack_iac.runtime.gateway.headers import upstream_request_lines
from gpustack_iac.runtime.gateway.hold import HoldQueue, HoldQueueFull
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.ratelimit import RateLimiter, pick_rule, retry_after
from gpustack_iac.runtime.gateway.router import Candidate, RouterBook
from gpustack_iac.runtime.gateway.routing import RouterMember, RouterRoute, RoutingTable, ServiceRoute, Upstream
from gpustack_iac.runtime.gateway.server import Answer, GatewayRunner, Request, ServerConnection, error_answer
from gpustack_iac.runtime.gateway.settings import GatewaySettings
from gpustack_iac.runtime.gateway.upstream import (
    ConnectFailed,
    ReadTimedOut,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
)

__all__ = ["GatewaySettings", "Gateway", "create_gateway_app", "make_runner", "data_plane_site", "GATEWAY_KEY"]

OPENAI_POST_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
# A member answering with one of these before any byte reached the client is treated as down.
RETRYABLE_STATUS = frozenset({502, 503, 504})
CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection before the answer"; only recorded, never sent
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
_JSON = "application/json; charset=utf-8"
_WWW_AUTHENTICATE = ["WWW-Authenticate: Bearer"]


@dataclass(slots=True)
class _Opened:
    """An upstream response whose head arrived and whose body is still to be relayed."""

    conn: UpstreamConnection
    route: ServiceRoute
    upstream: Upstream
    started: float  # time.perf_counter() when the successful attempt began (uvloop's clock ticks in whole ms)
    ttfb: float  # seconds until the response head arrived


@dataclass(frozen=True, slots=True)
class _Refusal:
    """An answer the gateway gives itself instead of relaying a replica's."""

    status: int
    code: str
    message: str


class _UpstreamFailed(Exception):
    """No replica produced a response (every attempt failed to connect or was reset)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Gateway:
    """Request handling state of one gateway: upstream pool, balancers, router health, hold queue."""

    def __init__(
        self, table: RoutingTable, metrics: Metrics, token: str, admin_token: str, domain: str | None, settings: GatewaySettings
    ) -> None:
        self.table = table
        self.metrics = metrics
        self.settings = settings
        self._token = token.encode()
        self._admin_token = admin_token.encode()
        self._domain_suffix = "." + domain.lower().strip(".") if domain else None
        self._balancers: dict[str, Balancer] = {}
        self.book = RouterBook(table, metrics)
        self.hold = HoldQueue(table, metrics, settings.hold_queue, settings.hold_timeout)
        self.limiter = RateLimiter()
        self._pool: UpstreamPool | None = None

    # --- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._pool = UpstreamPool(self.settings, asyncio.get_running_loop())
        self._pool.start()

    async def close(self) -> None:
        self.hold.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> UpstreamPool:
        assert self._pool is not None, "the gateway is not started"
        return self._pool

    # --- entry --------------------------------------------------------------------------------------
    def gate(self, req: Request) -> Answer | None:
        """What can be decided on the request head, before its body is read or `100 Continue` is sent:
        the token, and the rate limits of a service named by the path or Host. OpenAI routes name
        their service in the body; they are refused here only when no model is open to anonymous clients."""
        path = req.path
        if self._domain_suffix is not None:
            name = self._host_service(req.host)
            if name is not None:
                return self._gate_service(req, name, path)
        if path.startswith("/services/"):
            name, slash, rest = path[10:].partition("/")
            return self._gate_service(req, name, "/" + rest if slash else "/")
        if path in OPENAI_POST_PATHS and req.method == "POST":
            if self._authorized(req) or self.table.has_open_model():
                return None
            return self._unauthorized_answer()
        if path == "/metrics" and req.method == "GET":
            if _token_matches(req, self._admin_token) or self._authorized(req):
                return None
            return self._unauthorized_answer()
        if path == "/v1/models" and req.method == "GET" and self.table.has_open_model():
            return None  # anonymous clients see the open models
        return None if self._authorized(req) else self._unauthorized_answer()

    def _gate_service(self, req: Request, name: str, path: str) -> Answer | None:
        route = self.table.service(name)
        if route is None or route.auth:
            if not self._authorized(req):
                return self._unauthorized_answer()
            if route is None:
                return None  # 404, answered by the handler
        return self._rate_limited(req, route, path)

    def _client_address(self, req: Request) -> str:
        """The TCP peer; behind the local HAProxy, the address HAProxy appended to X-Forwarded-For."""
        if self.settings.behind_local_proxy and req.peer in ("127.0.0.1", "::1") and req.forwarded_for:
            return req.forwarded_for.rsplit(",", 1)[-1].strip()
        return req.peer or ""

    def _rate_limited(self, req: Request, route: ServiceRoute, path: str) -> Answer | None:
        """A 429 when the request is over the service's rate limit for its path."""
        rule = pick_rule(route.rate_limits, path)
        if rule is None:
            return None
        key = (req.header(rule.header) if rule.header else None) or self._client_address(req)
        wait = self.limiter.take(route.name, rule, key)
        if not wait:
            return None
        self.metrics.rejected("rate_limited")
        seconds = retry_after(wait)
        return error_answer(
            429, "rate_limited", f"service {route.name!r}: more than {rule.rps:g} requests per second on {rule.prefix}; retry in {seconds}s",
            [f"Retry-After: {seconds}"],
        )

    async def handle(self, req: Request, out: ServerConnection) -> None:
        path = req.path
        if self._domain_suffix is not None:
            name = self._host_service(req.host)
            if name is not None:
                await self._by_service(req, out, name, path)
                return
        if path.startswith("/services/"):
            name, slash, rest = path[10:].partition("/")
            await self._by_service(req, out, name, "/" + rest if slash else "/")
            return
        method = req.method
        if path in OPENAI_POST_PATHS and method == "POST":
            await self._by_model(req, out, path[3:])
            return
        if path == "/metrics" and method == "GET":
            self._metrics(req, out)
            return
        if path == "/v1/models" and method == "GET":
            self._models(req, out)
            return
        if not self._authorized(req):
            self._unauthorized(out)
            return
        self.metrics.rejected("not_found")
        _error(out, 404, "not_found", f"no route for {method} {path}; use /services/<name>/... or /v1/*")

    # --- route kinds ------------------------------------------------------------------------------
    async def _by_service(self, req: Request, out: ServerConnection, name: str, path: str) -> None:
        route = self.table.service(name)
        if route is None:
            if not self._authorized(req):
                self._unauthorized(out)
                return
            self.metrics.rejected("unknown_service")
            _error(out, 404, "unknown_service", f"no service named {name!r}")
            return
        if route.auth and not self._authorized(req):
            self._unauthorized(out)
            return
        fwd = self._forward_headers(req, route.auth)
        await self._serve_service(req, out, route, _with_query(path, req.query), fwd)

    async def _by_model(self, req: Request, out: ServerConnection, suffix: str) -> None:
        authorized = self._authorized(req)
        try:
            payload = json.loads(req.body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str):
            if not authorized:
                self._unauthorized(out)
                return
            self.metrics.rejected("bad_request")
            _error(out, 400, "invalid_request", "the body must be a JSON object with a string `model`")
            return
        target = self.table.by_model(model)
        if target is None:
            if not authorized:
                self._unauthorized(out)
                return
            self.metrics.rejected("unknown_model")
            _error(out, 404, "unknown_model", f"no service or router serves model {model!r}; see GET /v1/models")
            return
        if target.auth and not authorized:
            self._unauthorized(out)
            return
        fwd = self._forward_headers(req, target.auth)
        if isinstance(target, ServiceRoute):
            path = target.model_prefix.rstrip("/") + suffix
            limited = self._rate_limited(req, target, path)
            if limited is not None:
                out.respond(limited.status, limited.body, limited.content_type, limited.headers)
                return
            await self._serve_service(req, out, target, _with_query(path, req.query), fwd)
            return
        assert isinstance(payload, dict)
        await self._serve_router(req, out, target, suffix, payload, fwd)

    def _models(self, req: Request, out: ServerConnection) -> None:
        authorized = self._authorized(req)
        models = [(m, auth) for m, auth in self.table.models() if authorized or not auth]
        if not authorized and not models:
            self._unauthorized(out)
            return
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "gpustack-iac"} for m, _ in models]
        out.respond(200, json.dumps({"object": "list", "data": data}).encode(), _JSON)

    def _metrics(self, req: Request, out: ServerConnection) -> None:
        if not (_token_matches(req, self._admin_token) or _token_matches(req, self._token)):
            self._unauthorized(out)
            return
        out.respond(200, self.metrics.render_prometheus().encode(), "text/plain; charset=utf-8", ["X-Content-Type-Options: nosniff"])

    # --- serving one service ------------------------------------------------------------------
    async def _serve_service(self, req: Request, out: ServerConnection, route: ServiceRoute, path_qs: str, fwd: str) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        metrics.request_started(route.name)
        status = 500
        try:
            if not route.upstreams:
                held = await self._wait_for_replica(route)
                if isinstance(held, _Refusal):
                    status = _error(out, held.status, held.code, held.message)
                    return
                route = held
            try:
                opened = await self._open(route, req.method, path_qs, req.body, fwd)
            except _UpstreamFailed as exc:
                status = _error(out, exc.status, exc.code, str(exc))
                return
            metrics.first_byte(route.name, opened.ttfb)
            status = await self._relay(req, out, opened)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # the client left; not the service's error
            raise
        finally:
            metrics.request_finished(route.name, time.perf_counter() - started, status >= 500)

    async def _wait_for_replica(self, route: ServiceRoute) -> ServiceRoute | _Refusal:
        if not route.min_replicas_zero:
            return _Refusal(503, "no_ready_replica", f"service {route.name!r} has no ready replica")
        try:
            ready = await self.hold.wait_for_upstream(route.name)
        except HoldQueueFull:
            return _Refusal(503, "hold_queue_full", f"service {route.name!r} is starting and its waiting queue is full")
        if ready is None:
            return _Refusal(503, "no_ready_replica", f"service {route.name!r} got no ready replica within {self.settings.hold_timeout:g}s")
        return ready

    async def _open(self, route: ServiceRoute, method: str, path_qs: str, body: bytes, fwd: str) -> _Opened:
        """Send the request to the least busy replica; on a failed connect or an early reset, to another."""
        pool = self.pool
        balancer = self._balancer(route.name)
        # Everything after the request line and Host is the same for every attempt.
        if body or method not in _BODYLESS_METHODS:
            tail = (fwd + "Content-Length: %d\r\n\r\n" % len(body)).encode("latin-1") + body
        else:
            tail = (fwd + "\r\n").encode("latin-1")
        head_only = method == "HEAD"
        tried: set[str] = set()
        same_replica_retry = True
        fresh_connection = False
        last_error = "no replica tried"
        for _ in range(self.settings.upstream_retries + 1):
            upstream = balancer.pick(route.upstreams, frozenset(tried)) if tried else balancer.pick(route.upstreams)
            if upstream is None and same_replica_retry and tried:
                # A pooled keep-alive connection the replica closed shows up as a reset; with no other
                # replica left, one fresh connection to the same replica is the right second try.
                same_replica_retry = False
                fresh_connection = True
                upstream = balancer.pick(route.upstreams)
            if upstream is None:
                break
            url = upstream.url
            tried.add(url)
            balancer.acquire(upstream)
            self.metrics.attempt_started(route.name, upstream.group)
            started = time.perf_counter()
            conn: UpstreamConnection | None = None
            try:
                target = pool.target(url)
                conn = None if fresh_connection else pool.take_idle(url)
                if conn is None:
                    conn = await pool.connect(url)
                request_line = "%s %s%s HTTP/1.1\r\nHost: %s\r\n" % (method, target.base_path, path_qs, target.host_header)
                await conn.send(request_line.encode("latin-1") + tail, head_only)
            except (UpstreamError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                self._attempt_done(route, upstream, time.perf_counter() - started, error=True)
                if isinstance(exc, ValueError) or exc.retryable:
                    if isinstance(exc, (ConnectFailed, ValueError)):
                        same_replica_retry = False  # nothing listens there: do not knock twice
                    last_error = type(exc).__name__
                    continue
                # A read timeout or protocol error after the request went out: the replica may have
                # acted on it, so it is not retried.
                status = 504 if isinstance(exc, ReadTimedOut) else 502
                raise _UpstreamFailed(status, "upstream_failed", f"service {route.name!r}: replica failed ({type(exc).__name__})") from exc
            except BaseException:
                if conn is not None:
                    conn.close()
                self._attempt_done(route, upstream, time.perf_counter() - started, error=True)
                raise
            return _Opened(conn, route, upstream, started, time.perf_counter() - started)
        if not route.upstreams:
            raise _UpstreamFailed(503, "no_ready_replica", f"service {route.name!r} has no ready replica")
        raise _UpstreamFailed(502, "upstream_failed", f"service {route.name!r}: no replica answered ({last_error})")

    async def _relay(self, req: Request, out: ServerConnection, opened: _Opened) -> int:
        """Copy the upstream response to the client: small bodies in one write, the rest chunk by chunk. Returns the status."""
        conn = opened.conn
        status = conn.status
        error = status >= 500
        try:
            length = conn.content_length
            streamed = (
                length < 0
                or length > self.settings.buffer_limit
                or req.method == "HEAD"
                or conn.content_type.startswith("text/event-stream")
            )
            headers = conn.client_headers
            if not streamed:
                if conn.body_complete:
                    body = conn.take_buffered()
                else:
                    try:
                        body = await conn.read_all()
                    except UpstreamError as exc:
                        error = True
                        return _error(out, 502, "upstream_failed", f"replica response cut short ({type(exc).__name__})")
                out.respond(status, body, None, headers, conn.reason)
                return status
            out.start(status, conn.reason, headers, length)
            try:
                while True:
                    chunk = await conn.read()
                    if not chunk:
                        break
                    out.write(chunk)
                    if out.write_paused:
                        await out.drain()
            except ConnectionResetError:
                # The client went away: closing the upstream connection (below) cancels the replica's work.
                error = False
                return status
            except UpstreamError:
                # Headers are already out; all that is left is to cut the response so the client sees it incomplete.
                error = True
                out.abort()
                return 502
            out.finish()
            return status
        finally:
            conn.release()  # back to the pool when read to the end; otherwise closed, which stops the replica's work
            self._attempt_done(opened.route, opened.upstream, time.perf_counter() - opened.started, error=error)

    def _attempt_done(self, route: ServiceRoute, upstream: Upstream, seconds: float, error: bool) -> None:
        self._balancer(route.name).release(upstream)
        self.metrics.attempt_finished(route.name, upstream.group, seconds, error)

    # --- serving a router alias ----------------------------------------------------------------
    async def _serve_router(
        self, req: Request, out: ServerConnection, router: RouterRoute, suffix: str, payload: dict[str, object], fwd: str
    ) -> None:
        chosen = await self._open_router(req, router, suffix, payload, fwd)
        if isinstance(chosen, Answer):
            out.respond(chosen.status, chosen.body, chosen.content_type, chosen.headers)
            return
        if isinstance(chosen, _Refusal):
            self.metrics.rejected("router_unavailable")
            _error(out, chosen.status, chosen.code, chosen.message)
            return
        opened, member_of, service_started = chosen
        self.metrics.first_byte(opened.route.name, opened.ttfb)
        status = 500
        try:
            status = await self._relay(req, out, opened)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            self.metrics.request_finished(opened.route.name, time.perf_counter() - service_started, status >= 500)
            if member_of is not None:
                self.metrics.member_finished(member_of.name, opened.route.name, status >= 500)
                if status >= 500:
                    self.book.failed(member_of, opened.route.name)
                else:
                    self.book.succeeded(member_of, opened.route.name, opened.ttfb)

    async def _open_router(
        self,
        req: Request,
        router: RouterRoute,
        suffix: str,
        payload: dict[str, object],
        fwd: str,
    ) -> tuple[_Opened, RouterRoute | None, float] | _Refusal | Answer:
        """Open the router's candidates (router.py's fail-over plan) in turn, before the first byte only.

        A candidate over its own `rate_limits` for this client is skipped; when nothing else could
        serve, its 429 is the answer (a router alias is no way around a service's limits)."""
        method, query, body = req.method, req.query, req.body
        limited: Answer | None = None
        members = self.book.order(router)
        if not members:
            members = await self._wake_members(router)
        last_failure = "no member has a ready replica"
        for candidate in self.book.candidates(router, members):
            route, member_of = candidate.route, candidate.member_of
            refusal = self._rate_limited(req, route, route.model_prefix.rstrip("/") + suffix)
            if refusal is not None:
                limited = refusal
                continue
            started = time.perf_counter()
            if member_of is not None:
                self.metrics.member_started(member_of.name, route.name)
            self.metrics.request_started(route.name)
            path_qs = _with_query(route.model_prefix.rstrip("/") + suffix, query)
            try:
                opened = await self._open(route, method, path_qs, _rewrite_model(payload, body, route.model), fwd)
            except _UpstreamFailed as exc:
                last_failure = f"{route.name}: {exc}"
                self._candidate_failed(candidate, time.perf_counter() - started)
                continue
            except BaseException:
                # Cancelled because the client left: not the member's fault.
                self.metrics.request_finished(route.name, time.perf_counter() - started, False)
                if member_of is not None:
                    self.metrics.member_finished(member_of.name, route.name, False)
                raise
            if opened.conn.status in RETRYABLE_STATUS and not candidate.last:
                last_failure = f"{route.name}: HTTP {opened.conn.status}"
                opened.conn.close()
                self._attempt_done(route, opened.upstream, time.perf_counter() - opened.started, error=True)
                self._candidate_failed(candidate, time.perf_counter() - started)
                continue
            return opened, member_of, started
        if limited is not None:
            return limited
        return _Refusal(503, "router_unavailable", f"router {router.name!r}: no member could serve the request ({last_failure})")

    async def _wake_members(self, router: RouterRoute) -> list[RouterMember]:
        """Every member is scaled to zero: hold for the first one that may scale up from zero."""
        for member in router.members:
            route = self.table.service(member.service)
            if route is not None and route.min_replicas_zero:
                try:
                    await self.hold.wait_for_upstream(route.name)
                except HoldQueueFull:
                    return []
                return self.book.order(router)
        return []

    def _candidate_failed(self, candidate: Candidate, seconds: float) -> None:
        self.metrics.request_finished(candidate.route.name, seconds, True)
        if candidate.member_of is not None:
            self.metrics.member_finished(candidate.member_of.name, candidate.route.name, True)
            self.book.failed(candidate.member_of, candidate.route.name)

    # --- helpers --------------------------------------------------------------------------------------
    def _balancer(self, service: str) -> Balancer:
        balancer = self._balancers.get(service)
        if balancer is None:
            balancer = self._balancers[service] = Balancer()
        return balancer

    def _host_service(self, host: str) -> str | None:
        suffix = self._domain_suffix
        if suffix is None or not host or host.startswith("["):
            return None
        host = host.rsplit(":", 1)[0].lower().rstrip(".")
        if host.endswith(suffix):
            name = host[: -len(suffix)]
            if name and "." not in name:
                return name
        return None

    def _authorized(self, req: Request) -> bool:
        verdict = req.authorized
        if verdict is None:
            verdict = req.authorized = _token_matches(req, self._token)
        return verdict

    def _unauthorized(self, out: ServerConnection) -> None:
        self.metrics.rejected("unauthorized")
        _error(out, 401, "unauthorized", "missing or invalid bearer token")

    def _unauthorized_answer(self) -> Answer:
        self.metrics.rejected("unauthorized")
        return error_answer(401, "unauthorized", "missing or invalid bearer token", _WWW_AUTHENTICATE)

    def _forward_headers(self, req: Request, route_auth: bool) -> str:
        # An open service may use Authorization for its own purposes; the gateway's token never leaves.
        strip = route_auth or self._authorized(req)
        return upstream_request_lines(
            req.forward, authorization="" if strip else req.authorization, forwarded_for=req.forwarded_for,
            connection=req.connection, peer=req.peer, scheme="http", host=req.host,
        )


def _token_matches(req: Request, expected: bytes) -> bool:
    presented = _bearer(req.authorization)
    # latin-1 round-trips the header bytes exactly as the client sent them.
    return presented is not None and hmac.compare_digest(presented.encode("latin-1"), expected)


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return None
    return value.strip()


def _error(out: ServerConnection, status: int, code: str, message: str) -> int:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    out.respond(status, body, _JSON, _WWW_AUTHENTICATE if status == 401 else None)
    return status


def _with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _rewrite_model(payload: dict[str, object], body: bytes, served: str | None) -> bytes:
    """A router alias is not the member's model name: tell the member the name it serves."""
    if served is None or payload.get("model") == served:
        return body
    return json.dumps({**payload, "model": served}).encode()


GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gpustack_gateway", Gateway)


def create_gateway_app(
    table: RoutingTable, metrics: Metrics, token: str, admin_token: str, domain: str | None, settings: GatewaySettings
) -> web.Application:
    """The data plane, carried in an aiohttp Application (`app[GATEWAY_KEY]`) so embedders keep one
    shape for every server they run. Serve it with `make_runner(app)`: the data plane answers on its
    own HTTP/1.1 server, not on the app's router."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[GATEWAY_KEY] = Gateway(table, metrics, token, admin_token, domain, settings)
    return app


def make_runner(app: web.Application) -> GatewayRunner:
    """A runner for `web.TCPSite(runner, host, port)`: the data-plane server, which cancels a request's
    upstream work when its client disconnects and keeps no access log."""
    gateway = app[GATEWAY_KEY]
    settings = gateway.settings
    return GatewayRunner(
        gateway.handle, gate=gateway.gate, max_body=settings.max_body_bytes, start=gateway.start, stop=gateway.close,
        header_timeout=settings.header_timeout, max_connections=settings.max_client_connections,
        max_header_count=settings.max_header_count,
    )


def data_plane_site(runner: GatewayRunner, app: web.Application, host: str, port: int) -> web.TCPSite:
    """The listening site for the data plane, with a listen backlog sized for the connection cap."""
    return web.TCPSite(runner, host, port, backlog=app[GATEWAY_KEY].settings.listen_backlog)
