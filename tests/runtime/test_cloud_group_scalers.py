"""GCP MIG and Azure VMSS sizing (runtime/scaling/gcp.py, azure.py, rest.py) against stand-ins.

There is no emulator of Compute Engine's instance group managers or of ARM's scale sets, so the
stand-in here is a small aiohttp server that answers the exact REST calls the scalers make (and
nothing else: an unexpected call is a 404 the test sees), keeps a target size and a list of
instances, and records each request with its bearer token. The tokens come from the same stand-in
playing the instance's metadata server, as they would on the gateway's instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.live import AgentState, ReplicaState
from gpustack_iac.runtime.controller.node_sizing import NodeGroupSizer
from gpustack_iac.runtime.controller.store import AgentRecord, PlacementRecord, Store
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.routing import RoutingTable
from gpustack_iac.runtime.scaling import azure as az
from gpustack_iac.runtime.scaling.azure import VmssScaler
from gpustack_iac.runtime.scaling.gcp import MigScaler
from gpustack_iac.runtime.scaling.nodegroups import NodeGroupSpec
from gpustack_iac.runtime.scaling.rest import MetadataToken, RestClient

GCP_TOKEN, AZURE_TOKEN = "ya29.stand-in", "eyJ.stand-in"
MIG = "/compute/v1/projects/proj/regions/us-central1/instanceGroupManagers"
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

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.requests: list[tuple[str, str, Any, str]] = []  # method, path?query, JSON body, Authorization
        self.token_calls = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/computeMetadata/v1/instance/service-accounts/default/token", self._gcp_token)
        app.router.add_get("/metadata/identity/oauth2/token", self._azure_token)
        app.router.add_route("*", MIG + "/{tail:.*}", self._mig)
        app.router.add_route("*", VMSS + "/{tail:.*}", self._vmss)
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

    async def _record(self, request: web.Request, token: str) -> tuple[Any, web.Response | None]:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path_qs, body, request.headers.get("Authorization", "")))
        if request.headers.get("Authorization") != f"Bearer {token}":
            return body, web.json_response({"error": {"code": 401, "message": "no valid token"}}, status=401)
        return body, None

    async def _mig(self, request: web.Request) -> web.Response:
        body, denied = await self._record(request, GCP_TOKEN)
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
        body, denied = await self._record(request, AZURE_TOKEN)
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


def _run(scenario: Callable[[StandIn, str], Awaitable[None]]) -> None:
    async def main() -> None:
        stand_in = StandIn()
        runner = web.AppRunner(stand_in.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            await scenario(stand_in, f"http://127.0.0.1:{runner.addresses[0][1]}")
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 60))


def _mig(url: str) -> MigScaler:
    return MigScaler(RestClient("gcp", MetadataToken.gcp(url)), "proj", "us-central1", api=url)


def _vmss(url: str) -> VmssScaler:
    return VmssScaler(RestClient("azure", MetadataToken.azure(url)), "sub-1", "proj-dev", api=url)


def test_gcp_mig_resize_and_delete_one_named_instance_are_the_exact_calls() -> None:
    async def scenario(s: StandIn, url: str) -> None:
        s.groups["gpu"] = Group(1, ["gpu-abcd"])
        scaler = _mig(url)
        try:
            assert await scaler.get_size("gpu") == 1
            assert await scaler.set_size("gpu", 3) == 3
            s.groups["gpu"].instances += ["gpu-efgh", "gpu-ijkl"]
            assert await scaler.launch_errors("gpu") == []
            assert await scaler.remove_node("gpu", "gpu-efgh") == 2
            with pytest.raises(GpustackError, match="gcp: instance gpu-zzzz is not in instance group gpu"):
                await scaler.remove_node("gpu", "gpu-zzzz")
            with pytest.raises(GpustackError, match="gcp: cannot read instance group nope: HTTP 404: The resource 'nope'"):
                await scaler.get_size("nope")
        finally:
            await scaler.close()
        bearer = f"Bearer {GCP_TOKEN}"
        deleted = "https://www.googleapis.com/compute/v1/projects/proj/zones/us-central1-a/instances/gpu-efgh"
        assert s.requests[:7] == [
            ("GET", f"{MIG}/gpu", None, bearer),
            ("POST", f"{MIG}/gpu/resize?size=3", None, bearer),
            ("GET", f"{MIG}/gpu/listErrors", None, bearer),
            ("POST", f"{MIG}/gpu/listManagedInstances", None, bearer),
            ("POST", f"{MIG}/gpu/deleteInstances", {"instances": [deleted], "skipInstancesOnValidationError": False}, bearer),
            ("GET", f"{MIG}/gpu", None, bearer),
            ("POST", f"{MIG}/gpu/listManagedInstances", None, bearer),
        ]
        assert s.groups["gpu"].instances == ["gpu-abcd", "gpu-ijkl"] and s.token_calls == 1  # one token, reused

    _run(scenario)


def test_azure_vmss_capacity_and_delete_one_named_instance_are_the_exact_calls() -> None:
    async def scenario(s: StandIn, url: str) -> None:
        s.groups["gpu"] = Group(1, ["gpu000000"])
        scaler = _vmss(url)
        try:
            assert await scaler.get_size("gpu") == 1
            assert await scaler.set_size("gpu", 3) == 3
            s.groups["gpu"].instances += ["gpu000001", "gpu000002"]
            assert await scaler.remove_node("gpu", "gpu000001") == 2
            with pytest.raises(GpustackError, match="azure: instance gpu00000z is not in scale set gpu"):
                await scaler.remove_node("gpu", "gpu00000z")
        finally:
            await scaler.close()
        bearer = f"Bearer {AZURE_TOKEN}"
        assert s.requests[:5] == [
            ("GET", f"{VMSS}/gpu{Q}", None, bearer),
            ("PATCH", f"{VMSS}/gpu{Q}", {"sku": {"capacity": 3}}, bearer),
            ("GET", f"{VMSS}/gpu/virtualMachines{Q}", None, bearer),
            ("POST", f"{VMSS}/gpu/delete{Q}", {"instanceIds": ["1"]}, bearer),
            ("GET", f"{VMSS}/gpu{Q}", None, bearer),
        ]
        assert s.groups["gpu"].instances == ["gpu000000", "gpu000002"] and s.token_calls == 1

    _run(scenario)


def test_no_token_from_the_metadata_server_is_one_clear_error() -> None:
    async def scenario(s: StandIn, url: str) -> None:
        # A metadata server that refuses (wrong header): no call reaches the API.
        client = RestClient("gcp", MetadataToken(f"{url}/computeMetadata/v1/instance/service-accounts/default/token",
                                                  ("Metadata-Flavor", "nope")))
        scaler = MigScaler(client, "proj", "us-central1", api=url)
        try:
            with pytest.raises(GpustackError, match="gcp: the metadata server gave no token: HTTP 403"):
                await scaler.get_size("gpu")
        finally:
            await scaler.close()
        assert s.requests == []

    _run(scenario)


def test_idle_scale_in_through_the_vmss_stand_in(tmp_path: Path) -> None:
    """The controller's NodeGroupSizer on Azure: of two nodes, the idle one is drained and deleted by
    instance id, the capacity drops to 1, the busy VM stays."""
    spec = NodeGroupSpec("gpu", "gpu", 1, 4, gpus=4, labels={"backend": "azure"}, idle_duration=30)

    async def scenario(s: StandIn, url: str) -> None:
        s.groups["gpu"] = Group(2, ["gpu000000", "gpu000001"])
        scaler = _vmss(url)
        core = ControllerCore(Store(tmp_path / "state.db"), RoutingTable(), Metrics())
        for i, name in enumerate(s.groups["gpu"].instances):
            core.agents[name] = AgentState(record=AgentRecord(name, f"http://10.60.0.{20 + i}:8600", "t",
                                                              {"node_group": "gpu"}), healthy=True)
        busy = ReplicaState(record=PlacementRecord("svc-main-g1-1", "svc", "main", "g1", "gpu000000", (0,), 0.0))
        core.replicas[busy.id] = busy
        sizer = NodeGroupSizer(scaler, [spec], interval=1)
        try:
            await sizer.step(core, 0.0)
            await sizer.step(core, 30.0)
            await sizer.settle()
        finally:
            await scaler.close()
        assert [n.agent for n in sizer.removed] == ["gpu000001"]
        assert s.groups["gpu"].size == 1 and s.groups["gpu"].instances == ["gpu000000"]
        assert set(core.agents) == {"gpu000000"}

    _run(scenario)


def _vm_core(tmp_path: Path) -> ControllerCore:
    """A core with one service group of 2 replicas (1 GPU each) and no host for them."""
    from gpustack_iac.runtime.controller.live import GroupState, ServiceState
    from gpustack_iac.runtime.controller.model import parse_service

    group = {"name": "main", "generation": "g1", "replicas": {"min": 1, "max": 4}, "commands": ["x"],
             "resources": {"gpu": {"count": {"min": 1}}}}
    definition = parse_service({"name": "llm", "generation": "s1", "groups": [group], "scaling": {"metric": "rps", "target": 10}})
    core = ControllerCore(Store(tmp_path / "state.db"), RoutingTable(), Metrics())
    core.services["llm"] = ServiceState(definition=definition, groups={"main": GroupState(desired=2, no_capacity=True)})
    return core


ZONE_A = NodeGroupSpec("gpu-1", "gpu", 0, 4, gpus=1, labels={"backend": "azure", "zone": "1"})
ZONE_B = NodeGroupSpec("gpu-2", "gpu", 0, 4, gpus=1, labels={"backend": "azure", "zone": "2"})


def test_a_capacity_refusal_moves_the_demand_to_the_next_zone_at_once(tmp_path: Path) -> None:
    """ARM answers SkuNotAvailable to the first zone's capacity change: in the same tick the second
    zone's scale set grows instead, and the reason is in the waiting group's status."""
    async def scenario(s: StandIn, url: str) -> None:
        s.groups["gpu-1"] = Group(0, refuse="SkuNotAvailable")
        s.groups["gpu-2"] = Group(0)
        scaler = _vmss(url)
        core = _vm_core(tmp_path)
        try:
            await NodeGroupSizer(scaler, [ZONE_A, ZONE_B], interval=1).step(core, 10.0)
        finally:
            await scaler.close()
        assert (s.groups["gpu-1"].size, s.groups["gpu-2"].size) == (0, 2)
        assert core.services["llm"].group("main").capacity == "node group gpu-1: capacity: SkuNotAvailable"

    _run(scenario)


def test_mig_launch_errors_are_new_ones_only(tmp_path: Path) -> None:
    async def scenario(s: StandIn, url: str) -> None:
        old = {"timestamp": "2020-01-01T00:00:00Z", "error": {"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "message": "old"},
               "instanceActionDetails": {"instance": "gpu-old"}}
        new = {"timestamp": "2999-01-01T00:00:00Z", "error": {"code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                                                              "message": "The zone does not have enough resources"},
               "instanceActionDetails": {"instance": "gpu-new"}}
        s.groups["gpu"] = Group(1, errors=[old, new])
        scaler = _mig(url)
        try:
            assert await scaler.launch_errors("gpu") == ["ZONE_RESOURCE_POOL_EXHAUSTED: The zone does not have enough resources"]
            assert await scaler.launch_errors("gpu") == []  # reported once
        finally:
            await scaler.close()

    _run(scenario)
