"""The agent's HTTP API (see docs/runtime-api.md, "Agent API")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from gpustack_iac import __version__
from gpustack_iac.errors import AgentApiError, ReplicaSpecError
from gpustack_iac.runtime.agent import logs, volumes
from gpustack_iac.runtime.agent.hostinfo import StaticFacts, host_report
from gpustack_iac.runtime.agent.spec import parse_replica_spec
from gpustack_iac.runtime.agent.supervisor import Supervisor
from gpustack_iac.runtime.auth import Handler, bearer_auth_middleware, json_error, json_response, tail_query

SUPERVISOR_KEY: web.AppKey[Supervisor] = web.AppKey("supervisor", Supervisor)
FACTS_KEY: web.AppKey[StaticFacts] = web.AppKey("facts", StaticFacts)
STATE_DIR_KEY: web.AppKey[Path] = web.AppKey("state_dir", Path)

FOLLOW_POLL = 0.25


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ReplicaSpecError as exc:
        return json_error(422, "invalid_spec", str(exc))
    except AgentApiError as exc:
        return json_error(exc.status or 500, exc.code or "agent_error", str(exc))


def _float_query(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise AgentApiError(f"query parameter {name} must be a number", 400, "bad_request") from exc
    return min(max(value, lo), hi)


async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True, "version": __version__})


async def host(request: web.Request) -> web.Response:
    report = await asyncio.to_thread(host_report, request.app[FACTS_KEY], request.app[STATE_DIR_KEY])
    return json_response(report)


async def create_replica(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AgentApiError(f"the body is not valid JSON: {exc}", 400, "bad_request") from exc
    spec = parse_replica_spec(body)
    replica, created = await request.app[SUPERVISOR_KEY].create(spec)
    return json_response(replica, 201 if created else 200)


async def list_replicas(request: web.Request) -> web.Response:
    return json_response(request.app[SUPERVISOR_KEY].list())


async def get_replica(request: web.Request) -> web.Response:
    return json_response(request.app[SUPERVISOR_KEY].get(request.match_info["id"]))


async def delete_replica(request: web.Request) -> web.Response:
    grace = _float_query(request, "grace", 10.0, 0.0, 600.0)
    return json_response(await request.app[SUPERVISOR_KEY].stop(request.match_info["id"], grace))


async def replica_logs(request: web.Request) -> web.StreamResponse:
    supervisor = request.app[SUPERVISOR_KEY]
    replica_id = request.match_info["id"]
    path = supervisor.log_path(replica_id)
    try:
        tail = tail_query(request)
    except ValueError as exc:
        raise AgentApiError(str(exc), 400, "bad_request") from exc
    data, offset = await asyncio.to_thread(logs.tail_bytes, path, tail)
    if request.query.get("follow") not in ("1", "true", "yes"):
        return web.Response(body=data, content_type="text/plain", charset="utf-8")
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(data)
    # Ends when the replica is deleted or the client goes away. aiohttp does not cancel a
    # handler on disconnect, and an idle log gives no write to fail, so watch the transport.
    while supervisor.has(replica_id) and request.transport is not None and not request.transport.is_closing():
        chunk, offset = await asyncio.to_thread(logs.read_from, path, offset)
        if chunk:
            await response.write(chunk)
        else:
            await asyncio.sleep(FOLLOW_POLL)
    chunk, offset = await asyncio.to_thread(logs.read_from, path, offset)
    if chunk:
        await response.write(chunk)
    await response.write_eof()
    return response


def build_app(token: str, supervisor: Supervisor, facts: StaticFacts, state_dir: Path) -> web.Application:
    # Auth runs first: an unauthenticated caller learns nothing, not even whether a replica exists.
    app = web.Application(middlewares=[bearer_auth_middleware(lambda _request: token), _errors_middleware])
    app[SUPERVISOR_KEY] = supervisor
    app[FACTS_KEY] = facts
    app[STATE_DIR_KEY] = state_dir
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/host", host)
    app.router.add_post("/v1/replicas", create_replica)
    app.router.add_get("/v1/replicas", list_replicas)
    app.router.add_get("/v1/replicas/{id}", get_replica)
    app.router.add_get("/v1/replicas/{id}/logs", replica_logs)
    app.router.add_delete("/v1/replicas/{id}", delete_replica)
    volumes.add_routes(app)
    return app
