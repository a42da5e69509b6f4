"""The Kubernetes scaler against a stand-in API server: a real HTTP server on loopback answering
the two endpoints the scaler uses (GET and PATCH of deployments/{name}/scale), as the API does."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.scaling.kubernetes import DeploymentScaler, ScaleState, from_token

TOKEN = "sa-token-for-tests"
NS = "proj-dev"


def _scale(name: str, replicas: int) -> dict[str, Any]:
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": "1"},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas, "selector": f"gpustack.io/group={name}"}}


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    # Exactly "application/json", as the API server sends it (no charset parameter).
    return web.Response(body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"})


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return _json(body, code)


class StandIn:
    def __init__(self) -> None:
        self.replicas = {"embeddings-default": 1}
        self.requests: list[tuple[str, str, str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, request.headers.get("Content-Type", ""), body))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        name = request.match_info["name"]
        if request.match_info["ns"] != NS or name not in self.replicas:
            # What RBAC limited to resourceNames answers for any other Deployment.
            return _status(403, "Forbidden", f'deployments.apps "{name}" is forbidden')
        if request.method == "PATCH":
            self.replicas[name] = int(body["spec"]["replicas"])
        elif request.method != "GET":
            return _status(405, "MethodNotAllowed", "method not allowed")
        return _json(_scale(name, self.replicas[name]))


async def _with_api(scenario: Callable[[StandIn, str], Awaitable[None]]) -> None:
    stand_in = StandIn()
    runner = web.AppRunner(stand_in.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await scenario(stand_in, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def _run(scenario: Callable[[StandIn, str], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(_with_api(scenario), 60))


def test_reads_and_patches_the_scale_subresource() -> None:
    async def scenario(api: StandIn, url: str) -> None:
        scaler = DeploymentScaler(from_token(url, TOKEN, NS), NS)
        try:
            assert await scaler.get("embeddings-default") == ScaleState(desired=1, current=1)
            assert await scaler.scale("embeddings-default", 3) == ScaleState(desired=3, current=3)
        finally:
            await scaler.close()
        assert api.replicas["embeddings-default"] == 3
        (m1, p1, _, _), (m2, p2, ctype, body) = api.requests
        assert (m1, p1) == ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/embeddings-default/scale")
        assert (m2, p2) == ("PATCH", p1)
        assert ctype.startswith("application/merge-patch+json") or ctype.startswith("application/strategic-merge-patch+json")
        assert body == {"spec": {"replicas": 3}}

    _run(scenario)


def test_a_deployment_outside_its_rbac_is_one_clear_error() -> None:
    async def scenario(api: StandIn, url: str) -> None:
        scaler = DeploymentScaler(from_token(url, TOKEN, NS), NS)
        try:
            with pytest.raises(GpustackError, match=r"cannot scale deployment proj-dev/other to 2: .*forbidden"):
                await scaler.scale("other", 2)
        finally:
            await scaler.close()

    _run(scenario)


def test_a_wrong_token_is_refused() -> None:
    async def scenario(api: StandIn, url: str) -> None:
        scaler = DeploymentScaler(from_token(url, "wrong", NS), NS)
        try:
            with pytest.raises(GpustackError, match="cannot read the scale"):
                await scaler.get("embeddings-default")
        finally:
            await scaler.close()
        assert api.replicas["embeddings-default"] == 1

    _run(scenario)


def test_negative_replicas_never_reach_the_api() -> None:
    async def scenario(api: StandIn, url: str) -> None:
        scaler = DeploymentScaler(from_token(url, TOKEN, NS), NS)
        try:
            with pytest.raises(ValueError):
                await scaler.scale("embeddings-default", -1)
        finally:
            await scaler.close()
        assert api.requests == []

    _run(scenario)
