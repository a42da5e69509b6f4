"""A stand-in for the cloud APIs the GCP and Azure node-group scalers call (runtime/scaling/gcp.py,
azure.py): Compute Engine's regional MIG calls, ARM's scale-set calls, and both metadata servers'
token endpoints.

There is no emulator of Compute Engine's instance group managers or of ARM's scale sets, so this is a
small aiohttp server that answers the exact REST calls the scalers make (and nothing else: an
unexpected call is a 404 the test sees), keeps a target size and a list of instances, and records each
request with its bearer token. The unit tests (tests/runtime/test_cloud_group_scalers.py) run it on
loopback; the boot rehearsal (tests/cloud/rehearsal/) runs it on the namespace bridge with the metadata
stub's token, for the controller on a rehearsed gateway (`serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gpustack_iac.runtime.scaling import azure as az

GCP_TOKEN, AZURE_TOKEN = "ya29.stand-in", "eyJ.stand-in"
MIG = "/compute/v1/projects/proj/regions/us-central1/instanceGroupManagers"  # the unit tests' project and region
VMSS = "/subscriptions/sub-1/resourceGroups/proj-dev/providers/Microsoft.Compute/virtualMachineScaleSets"
Q = f"?api-version={az.API_VERSION}"


@dataclass
class Group:
    size: int
    instances: list[str] = field(default_factory=list)
    refuse: str | None = None  # an ARM error code a capacity change is answered with
    errors: list[dict[str, Any]] = field(default_factory=list)  # a MIG's listErrors items


class StandIn:
    """Compute Engine's regional MIG calls, ARM's VMSS calls and both metadata servers."""

    def __init__(self, gcp_token: str = GCP_TOKEN, mig: str = MIG, vmss: str = VMSS,
                 azure_token: Callable[[str], bool] = AZURE_TOKEN.__eq__) -> None:
        """`azure_token` says whether a bearer token is one ARM takes (the rehearsal's IMDS stub
        issues a fresh one per request)."""
        self.gcp_token, self.mig, self.vmss, self.azure_token = gcp_token, mig, vmss, azure_token
        self.groups: dict[str, Group] = {}
        self.requests: list[tuple[str, str, Any, str]] = []  # method, path?query, JSON body, Authorization
        self.token_calls = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/computeMetadata/v1/instance/service-accounts/default/token", self._gcp_token)
        app.router.add_get("/metadata/identity/oauth2/token", self._azure_token)
        app.router.add_route("*", self.mig + "/{tail:.*}", self._mig)
        app.router.add_route("*", self.vmss + "/{tail:.*}", self._vmss)
        return app

    async def _gcp_token(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403)
        self.token_calls += 1
        return web.json_response({"access_token": GCP_TOKEN, "expires_in": 3599, "token_type": "Bearer"})

    async def _azure_token(self, request: web.Request) -> web.Response:
        ok = request.headers.get("Metadata") == "true" and request.query.get("resource") == "https://management.azure.com/"
        if not ok:
            return web.Response(status=400)
        self.token_calls += 1
        return web.json_response({"access_token": AZURE_TOKEN, "expires_in": "86399", "token_type": "Bearer"})

    async def _record(self, request: web.Request, token: Callable[[str], bool]) -> tuple[Any, web.Response | None]:
        body = await request.json() if request.can_read_body else None
        bearer = request.headers.get("Authorization", "")
        self.requests.append((request.method, request.path_qs, body, bearer))
        if not bearer.startswith("Bearer ") or not token(bearer.removeprefix("Bearer ")):
            return body, web.json_response({"error": {"code": 401, "message": "no valid token"}}, status=401)
        return body, None

    async def _mig(self, request: web.Request) -> web.Response:
        body, denied = await self._record(request, self.gcp_token.__eq__)
        if denied:
            return denied
        name, _, verb = request.match_info["tail"].partition("/")
        g = self.groups.get(name)
        if g is None:
            return web.json_response({"error": {"code": 404, "message": f"The resource '{name}' was not found"}}, status=404)
        zone_url = "https://www.googleapis.com/compute/v1/projects/proj/zones/us-central1-a/instances/"
        if request.method == "GET" and verb == "":
            return web.json_response({"name": name, "targetSize": g.size})
        if request.method == "POST" and verb == "resize":
            g.size = int(request.query["size"])
            return web.json_response({"kind": "compute#operation", "status": "RUNNING"})
        if request.method == "GET" and verb == "listErrors":
            return web.json_response({"items": g.errors})
        if request.method == "POST" and verb == "listManagedInstances":
            return web.json_response({"managedInstances": [{"instance": zone_url + i, "instanceStatus": "RUNNING"}
                                                           for i in g.instances]})
        if request.method == "POST" and verb == "deleteInstances":
            for url in body["instances"]:
                g.instances.remove(url.rsplit("/", 1)[-1])
                g.size -= 1
            return web.json_response({"kind": "compute#operation", "status": "RUNNING"})
        return web.Response(status=404)

    async def _vmss(self, request: web.Request) -> web.Response:
        body, denied = await self._record(request, self.azure_token)
        if denied:
            return denied
        if request.query.get("api-version") != az.API_VERSION:
            return web.json_response({"error": {"code": "MissingApiVersionParameter", "message": "api-version"}}, status=400)
        name, _, verb = request.match_info["tail"].partition("/")
        g = self.groups.get(name)
        if g is None:
            return web.json_response({"error": {"code": "ResourceNotFound", "message": f"{name} not found"}}, status=404)
        if request.method == "GET" and verb == "":
            return web.json_response({"name": name, "sku": {"name": "Standard_NC24ads_A100_v4", "capacity": g.size}})
        if request.method == "PATCH" and verb == "" and g.refuse:
            return web.json_response({"error": {"code": g.refuse, "message": "The requested VM size is not available"}},
                                     status=409)
        if request.method == "PATCH" and verb == "":
            g.size = int(body["sku"]["capacity"])
            return web.json_response({"name": name, "sku": {"capacity": g.size}})
        if request.method == "GET" and verb == "virtualMachines":
            return web.json_response({"value": [
                {"name": f"{name}_{n}", "instanceId": str(n), "properties": {"osProfile": {"computerName": i}}}
                for n, i in enumerate(g.instances)]})
        if request.method == "POST" and verb == "delete":
            for n in sorted((int(x) for x in body["instanceIds"]), reverse=True):
                g.instances.pop(n)
                g.size -= 1
            return web.Response(status=202)
        return web.Response(status=404)


@contextlib.contextmanager
def serve(stand_in: StandIn, host: str) -> Iterator[str]:
    """`stand_in` on `host` and a free port, on its own event loop in a thread; its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(stand_in.app())
    ready = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port.append(runner.addresses[0][1])
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="group-stand-in", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the node-group stand-in did not start")
    try:
        yield f"http://{host}:{port[0]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
