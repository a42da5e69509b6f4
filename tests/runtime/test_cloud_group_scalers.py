"""GCP MIG and Azure VMSS sizing (runtime/scaling/gcp.py, azure.py, rest.py) against stand-ins.

The stand-in (tests/support/group_standin.py, shared with the boot rehearsal) answers the exact REST
calls the scalers make and records each with its bearer token. The tokens come from the same
stand-in playing the instance's metadata server, as they would on the gateway's instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.live import AgentState, ReplicaState
from gpustack_iac.runtime.controller.node_sizing import NodeGroupSizer
from gpustack_iac.runtime.controller.store import AgentRecord, PlacementRecord, Store
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.routing import RoutingTable
from gpustack_iac.runtime.scaling.azure import VmssScaler
from gpustack_iac.runtime.scaling.gcp import MigScaler
from gpustack_iac.runtime.scaling.nodegroups import NodeGroupSpec
from gpustack_iac.runtime.scaling.rest import MetadataToken, RestClient
from tests.support.group_standin import AZURE_TOKEN, GCP_TOKEN, MIG, Q, VMSS, Group, StandIn

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
