"""The gateway's data plane: an aiohttp reverse proxy in front of every service's replicas.

Routing: `/services/<name>/<path>`, `Host: <name>.<domain>`, and OpenAI-compatible `/v1/*`
by the body's `model` (a service's model or a router alias). Retries happen only before the
first byte reaches the client; after that a failure can only cut the response short.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import AsyncIterator

from multidict import CIMultiDict

import aiohttp
from aiohttp import web
from yarl import URL

from gpustack_iac.runtime.auth import bearer_token, json_error, token_matches
from gpustack_iac.runtime.gateway.balancer import Balancer
from gpustack_iac.runtime.gateway.headers import client_response_headers, upstream_request_headers
from gpustack_iac.runtime.gateway.hold import HoldQueue, HoldQueueFull
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.router import RouterBook
from gpustack_iac.runtime.gateway.routing import RouterMember, RouterRoute, RoutingTable, ServiceRoute, Upstream
from gpustack_iac.runtime.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_gateway_app", "make_runner", "GATEWAY_KEY"]

OPENAI_POST_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
# A member answering with one of these before any byte reached the client is treated as down.
RETRYABLE_STATUS = frozenset({502, 503, 504})
CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection before the answer"; only recorded, never sent
# Failures that happen before the upstream produced a byte of response: safe to try elsewhere.
_RETRYABLE_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@dataclass
class _Opened:
    """An upstream response whose headers arrived and whose body is still to be relayed."""

    response: aiohttp.ClientResponse
    route: ServiceRoute
    upstream: Upstream
    started: float  # time.perf_counter() when the successful attempt began (uvloop's clock ticks in whole ms)
    ttfb: float  # seconds until the response headers arrived


class _UpstreamFailed(Exception):
    """No replica produced a response (every attempt failed to connect or was reset)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Gateway:
    """Request handling state of one gateway app: pooled client, balancers, router health, hold queue."""

    def __init__(
        self, table: RoutingTable, metrics: Metrics, token: str, admin_token: str, domain: str | None, settings: GatewaySettings
    ) -> None:
        self.table = table
        self.metrics = metrics
        self.settings = settings
        self._token = token
        self._admin_token = admin_token
        self._domain = domain.lower().strip(".") if domain else None
        self._balancers: dict[str, Balancer] = {}
        self.book = RouterBook(table, metrics)
        self.hold = HoldQueue(table, metrics, settings.hold_queue, settings.hold_timeout)
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    async def session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        s = self.settings
        connector = aiohttp.TCPConnector(
            limit=s.max_connections,
            limit_per_host=s.max_connections_per_upstream,
            keepalive_timeout=s.keepalive_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout, sock_read=s.read_timeout),
            auto_decompress=False,
            # Never carry one client's cookies to another client's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )
        try:
            yield
        finally:
            self.hold.close()
            await self._session.close()

    # --- entry --------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        service_name = self._host_service(request)
        raw_path = request.rel_url.raw_path
        query = request.rel_url.raw_query_string
        if service_name is not None:
            return await self._by_service(request, service_name, raw_path, query)
        if raw_path.startswith("/services/"):
            name, slash, rest = raw_path[len("/services/") :].partition("/")
            return await self._by_service(request, name, "/" + rest if slash else "/", query)
        if raw_path == "/metrics" and request.method == "GET":
            return self._metrics(request)
        if raw_path in OPENAI_POST_PATHS and request.method == "POST":
            return await self._by_model(request, raw_path[len("/v1") :], query)
        if raw_path == "/v1/models" and request.method == "GET":
            return self._models(request)
        if not self._authorized(request):
            return self._unauthorized()
        self.metrics.rejected("not_found")
        return json_error(404, "not_found", f"no route for {request.method} {raw_path}; use /services/<name>/... or /v1/*")

    # --- route kinds ------------------------------------------------------------------------------
    async def _by_service(self, request: web.Request, name: str, path: str, query: str) -> web.StreamResponse:
        route = self.table.service(name)
        if route is None:
            if not self._authorized(request):
                return self._unauthorized()
            self.metrics.rejected("unknown_service")
            return json_error(404, "unknown_service", f"no service named {name!r}")
        if route.auth and not self._authorized(request):
            return self._unauthorized()
        # Read whole so that a retry on another replica can resend it (bounded by max_body_bytes).
        body = await request.read() if request.can_read_body else b""
        headers = self._forward_headers(request, route.auth)
        return await self._serve_service(request, route, _with_query(path, query), body, headers)

    async def _by_model(self, request: web.Request, suffix: str, query: str) -> web.StreamResponse:
        authorized = self._authorized(request)
        body = await request.read()
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str):
            if not authorized:
                return self._unauthorized()
            self.metrics.rejected("bad_request")
            return json_error(400, "invalid_request", "the body must be a JSON object with a string `model`")
        target = self.table.by_model(model)
        if target is None:
            if not authorized:
                return self._unauthorized()
            self.metrics.rejected("unknown_model")
            return json_error(404, "unknown_model", f"no service or router serves model {model!r}; see GET /v1/models")
        if target.auth and not authorized:
            return self._unauthorized()
        headers = self._forward_headers(request, target.auth)
        if isinstance(target, ServiceRoute):
            return await self._serve_service(request, target, _with_query(target.model_prefix.rstrip("/") + suffix, query), body, headers)
        return await self._serve_router(request, target, suffix, query, payload, body, headers)

    def _models(self, request: web.Request) -> web.Response:
        authorized = self._authorized(request)
        models = [(m, auth) for m, auth in self.table.models() if authorized or not auth]
        if not authorized and not models:
            return self._unauthorized()
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "gpustack-iac"} for m, _ in models]
        return web.json_response({"object": "list", "data": data})

    def _metrics(self, request: web.Request) -> web.Response:
        presented = bearer_token(request)
        if not (token_matches(presented, self._admin_token) or token_matches(presented, self._token)):
            return self._unauthorized()
        return web.Response(text=self.metrics.render_prometheus(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    # --- serving one service ------------------------------------------------------------------
    async def _serve_service(
        self, request: web.Request, route: ServiceRoute, path_qs: str, body: bytes, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        self.metrics.request_started(route.name)
        status = 500
        try:
            if not route.upstreams:
                held = await self._wait_for_replica(route)
                if isinstance(held, web.Response):
                    status = held.status
                    return held
                route = held
            try:
                opened = await self._open(route, request.method, path_qs, body, headers)
            except _UpstreamFailed as exc:
                status = exc.status
                return json_error(exc.status, exc.code, str(exc))
            response, status = await self._relay(request, opened)
            return response
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # the client left; not the service's error
            raise
        finally:
            self.metrics.request_finished(route.name, time.perf_counter() - started, status >= 500)

    async def _wait_for_replica(self, route: ServiceRoute) -> ServiceRoute | web.Response:
        if not route.min_replicas_zero:
            return json_error(503, "no_ready_replica", f"service {route.name!r} has no ready replica")
        try:
            ready = await self.hold.wait_for_upstream(route.name)
        except HoldQueueFull:
            return json_error(503, "hold_queue_full", f"service {route.name!r} is starting and its waiting queue is full")
        if ready is None:
            return json_error(
                503, "no_ready_replica", f"service {route.name!r} got no ready replica within {self.settings.hold_timeout:g}s"
            )
        return ready

    async def _open(self, route: ServiceRoute, method: str, path_qs: str, body: bytes, headers: CIMultiDict[str]) -> _Opened:
        """Send the request to the least busy replica; on a failed connect or an early reset, to another."""
        assert self._session is not None, "the gateway app is not started"
        balancer = self._balancer(route.name)
        tried: set[str] = set()
        same_replica_retry = True
        data = body if (body or method not in ("GET", "HEAD", "DELETE", "OPTIONS")) else None
        last_error = "no replica tried"
        for _ in range(self.settings.upstream_retries + 1):
            upstream = balancer.pick(route.upstreams, frozenset(tried))
            if upstream is None and same_replica_retry and tried:
                # A pooled keep-alive connection the replica closed shows up as a reset; with no other
                # replica left, one fresh connection to the same replica is the right second try.
                same_replica_retry = False
                upstream = balancer.pick(route.upstreams)
            if upstream is None:
                break
            tried.add(upstream.url)
            balancer.acquire(upstream)
            self.metrics.attempt_started(route.name, upstream.group)
            started = time.perf_counter()
            try:
                response = await self._session.request(
                    method, URL(upstream.url + path_qs, encoded=True), data=data, headers=headers, allow_redirects=False
                )
            except _RETRYABLE_ERRORS as exc:
                self._attempt_done(route, upstream, time.perf_counter() - started, error=True)
                if isinstance(exc, aiohttp.ClientConnectorError):
                    same_replica_retry = False  # nothing listens there: do not knock twice
                last_error = f"{type(exc).__name__}"
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # A read timeout or protocol error after the request went out: the replica may have
                # acted on it, so it is not retried.
                self._attempt_done(route, upstream, time.perf_counter() - started, error=True)
                status = 504 if isinstance(exc, asyncio.TimeoutError) else 502
                raise _UpstreamFailed(status, "upstream_failed", f"service {route.name!r}: replica failed ({type(exc).__name__})") from exc
            except BaseException:
                self._attempt_done(route, upstream, time.perf_counter() - started, error=True)
                raise
            return _Opened(response, route, upstream, started, time.perf_counter() - started)
        if not route.upstreams:
            raise _UpstreamFailed(503, "no_ready_replica", f"service {route.name!r} has no ready replica")
        raise _UpstreamFailed(502, "upstream_failed", f"service {route.name!r}: no replica answered ({last_error})")

    async def _relay(self, request: web.Request, opened: _Opened) -> tuple[web.StreamResponse, int]:
        """Copy the upstream response to the client: small bodies in one write, the rest chunk by chunk."""
        upstream = opened.response
        status = upstream.status
        error = status >= 500
        try:
            length = upstream.content_length
            content_type = upstream.headers.get("Content-Type", "")
            streamed = (
                length is None
                or length > self.settings.buffer_limit
                or content_type.startswith("text/event-stream")
                or request.method == "HEAD"
            )
            if not streamed:
                try:
                    body = await upstream.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    error = True
                    status = 502
                    return json_error(502, "upstream_failed", f"replica response cut short ({type(exc).__name__})"), status
                headers = client_response_headers(upstream.headers, keep_length=False)
                return web.Response(status=status, reason=upstream.reason, body=body, headers=headers), status
            out = web.StreamResponse(status=status, reason=upstream.reason, headers=client_response_headers(upstream.headers, keep_length=True))
            await out.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
            except ConnectionResetError:
                # The client went away: closing the upstream response (below) cancels the replica's work.
                error = False
                return out, status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                # Headers are already out; all that is left is to cut the response so the client sees it incomplete.
                error = True
                if request.transport is not None:
                    request.transport.close()
                return out, 502
            await out.write_eof()
            return out, status
        finally:
            if upstream.content.is_eof():
                upstream.release()  # back to the pool
            else:
                upstream.close()  # unread body: the connection cannot be reused, and closing it stops the replica's work
            self._attempt_done(opened.route, opened.upstream, time.perf_counter() - opened.started, error=error)

    def _attempt_done(self, route: ServiceRoute, upstream: Upstream, seconds: float, error: bool) -> None:
        self._balancer(route.name).release(upstream)
        self.metrics.attempt_finished(route.name, upstream.group, seconds, error)

    # --- serving a router alias ----------------------------------------------------------------
    async def _serve_router(
        self, request: web.Request, router: RouterRoute, suffix: str, query: str, payload: dict[str, object], body: bytes, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        chosen = await self._open_router(router, request.method, suffix, query, payload, body, headers, frozenset())
        if isinstance(chosen, web.Response):
            self.metrics.rejected("router_unavailable")
            return chosen
        opened, member_of, service_started = chosen
        status = 500
        try:
            response, status = await self._relay(request, opened)
            return response
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
        router: RouterRoute,
        method: str,
        suffix: str,
        query: str,
        payload: dict[str, object],
        body: bytes,
        headers: CIMultiDict[str],
        visited: frozenset[str],
    ) -> tuple[_Opened, RouterRoute | None, float] | web.Response:
        """Try members in strategy order (at most retries + 1), then fallback aliases; before the first byte only."""
        visited = visited | {router.name}
        members = self.book.order(router)
        if not members:
            members = await self._wake_members(router)
        members = members[: router.retries + 1]
        fallbacks = [alias for alias in router.fallbacks if alias not in visited]
        last_failure = "no member has a ready replica"
        for index, member in enumerate(members):
            route = self.table.service(member.service)
            if route is None or not route.upstreams:
                continue
            is_last = index == len(members) - 1 and not fallbacks
            started = time.perf_counter()
            self.metrics.member_started(router.name, route.name)
            self.metrics.request_started(route.name)
            member_body = _rewrite_model(payload, body, route.model)
            path_qs = _with_query(route.model_prefix.rstrip("/") + suffix, query)
            try:
                opened = await self._open(route, method, path_qs, member_body, headers)
            except _UpstreamFailed as exc:
                last_failure = f"{route.name}: {exc}"
                self._member_failed(router, route, time.perf_counter() - started)
                continue
            except BaseException:
                # Cancelled because the client left: not the member's fault.
                self.metrics.request_finished(route.name, time.perf_counter() - started, False)
                self.metrics.member_finished(router.name, route.name, False)
                raise
            if opened.response.status in RETRYABLE_STATUS and not is_last:
                last_failure = f"{route.name}: HTTP {opened.response.status}"
                opened.response.close()
                self._attempt_done(route, opened.upstream, time.perf_counter() - opened.started, error=True)
                self._member_failed(router, route, time.perf_counter() - started)
                continue
            return opened, router, started
        for alias in fallbacks:
            target = self.table.by_model(alias)
            if isinstance(target, RouterRoute) and target.name not in visited:
                chosen = await self._open_router(target, method, suffix, query, payload, body, headers, visited)
                if not isinstance(chosen, web.Response):
                    return chosen
            elif isinstance(target, ServiceRoute) and target.upstreams:
                started = time.perf_counter()
                self.metrics.request_started(target.name)
                path_qs = _with_query(target.model_prefix.rstrip("/") + suffix, query)
                try:
                    opened = await self._open(target, method, path_qs, _rewrite_model(payload, body, target.model), headers)
                except _UpstreamFailed as exc:
                    last_failure = f"{target.name}: {exc}"
                    self.metrics.request_finished(target.name, time.perf_counter() - started, True)
                    continue
                return opened, None, started
        return json_error(503, "router_unavailable", f"router {router.name!r}: no member could serve the request ({last_failure})")

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

    def _member_failed(self, router: RouterRoute, route: ServiceRoute, seconds: float) -> None:
        self.metrics.request_finished(route.name, seconds, True)
        self.metrics.member_finished(router.name, route.name, True)
        self.book.failed(router, route.name)

    # --- helpers --------------------------------------------------------------------------------------
    def _balancer(self, service: str) -> Balancer:
        balancer = self._balancers.get(service)
        if balancer is None:
            balancer = self._balancers[service] = Balancer()
        return balancer

    def _host_service(self, request: web.Request) -> str | None:
        if self._domain is None:
            return None
        host = request.host.rsplit(":", 1)[0].lower().rstrip(".") if not request.host.startswith("[") else ""
        suffix = "." + self._domain
        if host.endswith(suffix):
            name = host[: -len(suffix)]
            if name and "." not in name:
                return name
        return None

    def _authorized(self, request: web.Request) -> bool:
        return token_matches(bearer_token(request), self._token)

    def _unauthorized(self) -> web.Response:
        self.metrics.rejected("unauthorized")
        return json_error(401, "unauthorized", "missing or invalid bearer token")

    def _forward_headers(self, request: web.Request, route_auth: bool) -> CIMultiDict[str]:
        # An open service may use Authorization for its own purposes; the gateway's token never leaves.
        strip = route_auth or self._authorized(request)
        return upstream_request_headers(
            request.headers, strip_authorization=strip, peer=request.remote, scheme=request.scheme, host=request.host
        )


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
    """The data-plane app. Serve it with `make_runner` so that client disconnects cancel upstream work."""
    gateway = Gateway(table, metrics, token, admin_token, domain, settings)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[GATEWAY_KEY] = gateway
    app.cleanup_ctx.append(gateway.session_ctx)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """An AppRunner that cancels a handler when its client disconnects (so the upstream request is
    cancelled even while the replica is silent) and keeps no access log (it would slow every request)."""
    return web.AppRunner(app, handler_cancellation=True, access_log=None)
