"""Real loopback servers for the gateway tests: tiny aiohttp upstreams and the gateway itself.

Every server binds 127.0.0.1 port 0 and is stopped by its context manager, also when a test fails.
Tests are plain functions that call `run(coro)`: one event loop per test, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import aiohttp
from aiohttp import web

from gpustack_iac.runtime.auth import new_token
from tests.support.ports import closed_port, free_port  # noqa: F401 - the tests of this folder import closed_port from here
from gpustack_iac.runtime.gateway.haproxy.dataplane import HaproxyDataPlane, PlaneOptions
from gpustack_iac.runtime.gateway.haproxy.stats import HaproxyMetrics, read_log
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.proxy import create_gateway_app, data_plane_site, make_runner
from gpustack_iac.runtime.gateway.routing import RoutingTable, Upstream
from gpustack_iac.runtime.gateway.settings import GatewaySettings

T = TypeVar("T")
TEST_DEADLINE_S = 60.0  # generous: the machine is shared


def run(coro: Awaitable[T], deadline: float = TEST_DEADLINE_S) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, deadline)

    return asyncio.run(bounded())




@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class EchoStats:
    """What one echo upstream saw."""

    name: str
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)


def echo_app(stats: EchoStats, delay: float = 0.0, status: int = 200) -> web.Application:
    """Answers every request with JSON naming itself, the path, the headers and the body it received."""

    async def handle(request: web.Request) -> web.Response:
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            body = await request.read()
            if delay:
                await asyncio.sleep(delay)
            record = {
                "replica": stats.name,
                "method": request.method,
                "path": request.rel_url.raw_path_qs,
                "headers": {k: v for k, v in request.headers.items()},
                "body": body.decode(errors="replace"),
            }
            stats.seen.append(record)
            return web.json_response(record, status=status)
        finally:
            stats.in_flight -= 1

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@dataclass
class SseStats:
    emitted_at: list[float] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def sse_app(stats: SseStats, tokens: int, interval: float = 0.05) -> web.Application:
    """Emits `tokens` SSE events, one every `interval` seconds; notes when its client goes away."""

    async def handle(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            for i in range(tokens):
                await response.write(f"data: {json.dumps({'token': i})}\n\n".encode())
                stats.emitted_at.append(loop.time())
                await asyncio.sleep(interval)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            stats.finished.set()
        except (asyncio.CancelledError, ConnectionResetError):
            stats.cancelled.set()
            raise
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@dataclass
class GatewayHandle:
    url: str
    table: RoutingTable
    metrics: Metrics
    token: str
    admin_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# Which data plane `gateway()` starts: "python" (the Python gateway alone) or "haproxy" (HAProxy in
# front, the Python gateway behind it as activator and for routers). tests/runtime/conftest.py
# sets it per parametrization of the gateway test modules.
DATA_PLANE_ENV = "GPUSTACK_DATA_PLANE"


def data_plane() -> str:
    return os.environ.get(DATA_PLANE_ENV, "python")


@asynccontextmanager
async def gateway(
    table: RoutingTable | None = None, *, domain: str | None = None, settings: GatewaySettings | None = None
) -> AsyncIterator[GatewayHandle]:
    table = table if table is not None else RoutingTable()
    settings = settings or GatewaySettings()
    haproxy = data_plane() == "haproxy"
    metrics = HaproxyMetrics() if haproxy else Metrics()
    token, admin = new_token(), new_token()
    python_settings = dataclasses.replace(settings, behind_local_proxy=True) if haproxy else settings
    app = create_gateway_app(table, metrics, token, admin, domain, python_settings)
    runner = make_runner(app)
    await runner.setup()
    plane: HaproxyDataPlane | None = None
    log_reader: asyncio.BaseTransport | None = None
    directory = tempfile.mkdtemp(prefix="gw-haproxy-") if haproxy else None
    try:
        site = data_plane_site(runner, app, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        if directory is not None:
            plane = HaproxyDataPlane(table, PlaneOptions(
                host="127.0.0.1", port=free_port(), python_port=int(runner.addresses[0][1]),
                directory=Path(directory), token=token, domain=domain, settings=settings, threads=2,
            ))
            assert isinstance(metrics, HaproxyMetrics)
            log_reader = await read_log(metrics, plane.files.log_socket)
            plane.start()
            metrics.api, metrics.slots = plane.api, (lambda: plane.slots if plane is not None else {})
            url = f"http://127.0.0.1:{plane.options.port}"
        yield GatewayHandle(url, table, metrics, token, admin)
    finally:
        if plane is not None:
            plane.stop()
        if log_reader is not None:
            log_reader.close()
        await runner.cleanup()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def upstream(replica_id: str, group: str, url: str) -> Upstream:
    return Upstream(replica_id=replica_id, group=group, url=url)


async def poll_until(predicate: Callable[[], bool], timeout: float = 20.0, step: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(step)


@asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
