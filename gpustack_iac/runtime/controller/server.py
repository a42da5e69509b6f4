"""The controller's control API (docs/runtime-api.md, "Controller control API"), bearer = admin token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from gpustack_iac.errors import GpustackError, ScalingConfigError
from gpustack_iac.runtime.auth import Handler, bearer_auth_middleware, json_error, json_response, tail_query
from gpustack_iac.runtime.controller.model import ServiceDefinitionError, parse_router, parse_service
from gpustack_iac.runtime.controller import join
from gpustack_iac.runtime.controller.errors import UnknownAgentError, UnknownRouterError, UnknownServiceError
from gpustack_iac.runtime.controller.reconcile import Controller
from gpustack_iac.runtime.controller.status import agents_json, router_json, routers_json, service_json, services_json

CONTROLLER_KEY: web.AppKey[Controller] = web.AppKey("controller", Controller)
JOIN_KEY: web.AppKey[join.JoinTokens] = web.AppKey("join_tokens", join.JoinTokens)



class BodyError(Exception):
    """A request body that is not JSON the API can read (a 400, unlike a well-formed but invalid one)."""


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BodyError as exc:
        return json_error(400, "invalid_json", str(exc))
    except UnknownServiceError as exc:
        return json_error(404, "unknown_service", str(exc))
    except UnknownAgentError as exc:
        return json_error(404, "unknown_agent", str(exc))
    except UnknownRouterError as exc:
        return json_error(404, "unknown_router", str(exc))
    except (ServiceDefinitionError, ScalingConfigError) as exc:
        return json_error(422, "invalid_definition", str(exc))
    except GpustackError as exc:
        return json_error(502, "runtime_error", str(exc))


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise BodyError(f"the body must be JSON: {exc}") from exc
    except RecursionError as exc:
        # json nests by recursion: a body of a few hundred thousand '[' gave a 500 and a traceback.
        raise BodyError("the body must be JSON: nested too deeply") from exc


async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def put_agent(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not isinstance(body.get("token"), str):
        raise ServiceDefinitionError('agent registration needs {"url": str, "token": str, "labels": {...}}')
    labels = body.get("labels") or {}
    if not isinstance(labels, dict):
        raise ServiceDefinitionError("labels: expected an object")
    tunnel = body.get("tunnel")
    if tunnel is not None and (not isinstance(tunnel, dict) or not isinstance(tunnel.get("hostname"), str)
                               or not isinstance(tunnel.get("remote_port"), int)):
        raise ServiceDefinitionError('tunnel: expected {"hostname": str, "remote_port": int, ...}')
    await request.app[CONTROLLER_KEY].put_agent(name, body["url"], body["token"], labels, tunnel)
    return json_response({"name": name})


async def delete_agent(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[CONTROLLER_KEY].delete_agent(name)
    return json_response({"name": name})


async def put_join(request: web.Request) -> web.Response:
    """An agent registers itself with its fleet's join token (docs/cloud.md#joining)."""
    name = request.match_info["name"]
    tokens, presented = request.app[JOIN_KEY], join.presented(request)
    # On the head first: without some fleet's join token the body is never read, so an anonymous
    # client cannot make the controller buffer and parse a megabyte of JSON.
    if not tokens.admits_any(presented):
        return join.refuse(request, None, name)
    body = await _body(request)
    fleet = body.get("fleet") if isinstance(body, dict) else None
    if not tokens.admits(str(fleet), presented):
        return join.refuse(request, fleet if isinstance(fleet, str) else None, name)
    problem = join.check_join_body(body)
    if problem is not None:
        raise ServiceDefinitionError(problem)
    controller = request.app[CONTROLLER_KEY]
    known = controller.agents.get(name)
    if known is not None and known.record.labels.get("fleet") != body["fleet"]:
        # A fleet's join token vouches for that fleet's hosts only, never for another's name.
        return json_error(409, "agent_exists", f"agent {name!r} is registered outside fleet {body['fleet']!r}")
    try:
        labels = join.join_labels(body)
    except ValueError as exc:
        raise ServiceDefinitionError(str(exc)) from exc
    await controller.put_agent(name, body["url"], body["token"], labels, None)
    return json_response({"name": name, "fleet": body["fleet"]})


async def get_join(request: web.Request) -> web.Response:
    """Whether the controller knows this agent at this URL; a joined agent polls it to re-join
    after the controller lost its state (a new gateway instance)."""
    name, fleet = request.match_info["name"], request.query.get("fleet", "")
    if not request.app[JOIN_KEY].admits(fleet, join.presented(request)):
        return join.refuse(request, fleet, name)
    known = request.app[CONTROLLER_KEY].agents.get(name)
    if known is None or known.record.labels.get("fleet") != fleet:
        return json_error(404, "unknown_agent", f"agent {name!r} has not joined fleet {fleet!r}")
    return json_response({"name": name, "url": known.record.url})


async def list_agents(request: web.Request) -> web.Response:
    return json_response(agents_json(request.app[CONTROLLER_KEY]))


async def put_service(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await _body(request)
    if isinstance(body, dict):
        body.setdefault("name", name)
    definition = parse_service(body)
    if definition.name != name:
        raise ServiceDefinitionError(f"the body names service {definition.name!r} but the path {name!r}")
    endpoint = await request.app[CONTROLLER_KEY].put_service(definition)
    return json_response({"name": name, "endpoint": endpoint})


async def delete_service(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[CONTROLLER_KEY].delete_service(name)
    return json_response({"name": name})


async def list_services(request: web.Request) -> web.Response:
    return json_response(services_json(request.app[CONTROLLER_KEY]))


async def get_service(request: web.Request) -> web.Response:
    return json_response(service_json(request.app[CONTROLLER_KEY], request.match_info["name"]))


async def service_logs(request: web.Request) -> web.StreamResponse:
    try:
        tail = tail_query(request)
    except ValueError as exc:
        return json_error(400, "bad_request", str(exc))
    controller = request.app[CONTROLLER_KEY]
    name, group, replica = request.match_info["name"], request.query.get("group"), request.query.get("replica")
    if request.query.get("follow") not in ("1", "true"):
        return web.Response(text=await controller.logs(name, group, replica, tail), content_type="text/plain")
    controller.log_sources(name, group, replica)  # 404 before the stream starts
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        async for chunk in controller.follow_logs(name, group, replica, tail):
            await response.write(chunk)
    except ConnectionResetError:
        return response  # the reader went away
    await response.write_eof()
    return response


async def put_router(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await _body(request)
    if isinstance(body, dict):
        body.setdefault("name", name)
    router = parse_router(body)
    if router.name != name:
        raise ServiceDefinitionError(f"the body names router {router.name!r} but the path {name!r}")
    await request.app[CONTROLLER_KEY].put_router(router)
    return json_response({"name": name, "endpoint": f"{request.app[CONTROLLER_KEY].public_url}/v1"})


async def delete_router(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[CONTROLLER_KEY].delete_router(name)
    return json_response({"name": name})


async def list_routers(request: web.Request) -> web.Response:
    return json_response(routers_json(request.app[CONTROLLER_KEY]))


async def get_router(request: web.Request) -> web.Response:
    return json_response(router_json(request.app[CONTROLLER_KEY], request.match_info["name"]))


def create_control_app(controller: Controller, admin_token: str, join_token_dir: Path | None = None) -> web.Application:
    """The control API app; the caller owns the controller's lifecycle (start/close).

    Join routes check a fleet's join token themselves; every other route needs the admin token."""
    app = web.Application(middlewares=[
        bearer_auth_middleware(lambda r: None if join.is_join_path(r) else admin_token), _errors])
    app[CONTROLLER_KEY] = controller
    app[JOIN_KEY] = join.JoinTokens(join_token_dir)
    app.router.add_put("/control/join/{name}", put_join)
    app.router.add_get("/control/join/{name}", get_join)
    app.router.add_get("/control/health", health)
    app.router.add_put("/control/agents/{name}", put_agent)
    app.router.add_delete("/control/agents/{name}", delete_agent)
    app.router.add_get("/control/agents", list_agents)
    app.router.add_put("/control/services/{name}", put_service)
    app.router.add_delete("/control/services/{name}", delete_service)
    app.router.add_get("/control/services", list_services)
    app.router.add_get("/control/services/{name}", get_service)
    app.router.add_get("/control/services/{name}/logs", service_logs)
    # Routers (issue 5): an extension of docs/runtime-api.md, same auth and error shapes.
    app.router.add_put("/control/routers/{name}", put_router)
    app.router.add_delete("/control/routers/{name}", delete_router)
    app.router.add_get("/control/routers", list_routers)
    app.router.add_get("/control/routers/{name}", get_router)
    return app
