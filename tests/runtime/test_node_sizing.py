"""Node-group sizing (runtime/scaling/nodegroups.py, runtime/controller/node_sizing.py).

The decisions as pure functions; the controller's demands from its state; the AWS scaler
against a stand-in boto3 client (boto3 is optional) and against moto's server (growth, spot
fallback, idle scale-in with draining); the Kubernetes path against the stand-in API server of
test_kubernetes_scaler.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from conftest import PYTHON, wait_until
from controller_fixtures import GatewayProcess, echo_group, service_def
from test_kubernetes_scaler import NS, TOKEN, StandIn

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.runtime.controller.live import AgentState, GroupState, ReplicaState, ServiceState
from gpustack_iac.runtime.controller.model import parse_service
from gpustack_iac.runtime.controller.node_sizing import DeploymentSizer, NodeGroupSizer, demands, joined, run_sizers
from gpustack_iac.runtime.controller.store import AgentRecord, PlacementRecord
from gpustack_iac.runtime.scaling.aws import AsgScaler
from gpustack_iac.runtime.scaling.kubernetes import DeploymentScaler, from_token
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.sizing_config import load_sizers
from gpustack_iac.runtime.controller.store import Store
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.routing import RoutingTable
from gpustack_iac.runtime.scaling.nodegroups import (
    Demand,
    IdleNode,
    NodeGroupSpec,
    deployment_sizes,
    grow_sizes,
    idle_victims,
    nodes_for,
    slots_per_node,
)

SPOT = NodeGroupSpec("gpu-spot", "gpu", 1, 4, gpus=4, labels={"backend": "aws", "region": "us-east-1", "spot": "true"})
OD = NodeGroupSpec("gpu-on-demand", "gpu", 0, 2, gpus=4, labels={"backend": "aws", "region": "us-east-1", "spot": "false"})


# ------------------------------------------------------------------------------ pure decisions
def test_nodes_and_slots() -> None:
    assert [nodes_for(n, 2) for n in (0, 1, 2, 3)] == [0, 1, 1, 2]
    assert slots_per_node(SPOT, 2) == 2 and slots_per_node(SPOT, 0) == 1 and slots_per_node(SPOT, 8) == 0


def test_grows_the_first_group_by_the_nodes_the_missing_replicas_need() -> None:
    # 3 replicas of 2 GPUs each, 2 per 4-GPU node: 2 more nodes.
    demand = Demand(3, {"gpu-spot": 2, "gpu-on-demand": 2})
    assert grow_sizes([SPOT, OD], {"gpu-spot": 1, "gpu-on-demand": 0}, {"gpu-spot": 1}, [demand]) == {"gpu-spot": 3}


def test_spills_to_the_next_group_at_max_and_stays_within_bounds() -> None:
    demand = Demand(20, {"gpu-spot": 1, "gpu-on-demand": 1})
    assert grow_sizes([SPOT, OD], {"gpu-spot": 3, "gpu-on-demand": 0}, {"gpu-spot": 3}, [demand]) == {
        "gpu-spot": 4, "gpu-on-demand": 2}
    # Already at max everywhere: nothing to ask for.
    assert grow_sizes([SPOT, OD], {"gpu-spot": 4, "gpu-on-demand": 2}, {"gpu-spot": 4, "gpu-on-demand": 2}, [demand]) == {}


def test_nodes_still_booting_are_not_asked_for_again() -> None:
    demand = Demand(2, {"gpu-spot": 1})
    # Size 3, one joined: two nodes are on their way and will hold the two replicas.
    assert grow_sizes([SPOT], {"gpu-spot": 3}, {"gpu-spot": 1}, [demand]) == {}
    assert grow_sizes([SPOT], {"gpu-spot": 3}, {"gpu-spot": 1}, [Demand(3, {"gpu-spot": 1})]) == {"gpu-spot": 4}


def test_a_group_that_cannot_host_the_replicas_is_not_grown() -> None:
    assert grow_sizes([SPOT, OD], {"gpu-spot": 1, "gpu-on-demand": 0}, {}, [Demand(2, {"gpu-on-demand": 1})]) == {
        "gpu-on-demand": 2}
    assert grow_sizes([SPOT], {"gpu-spot": 1}, {}, [Demand(2, {})]) == {}


def test_a_size_below_min_is_raised_to_min() -> None:
    assert grow_sizes([SPOT], {"gpu-spot": 0}, {}, []) == {"gpu-spot": 1}


def test_deployment_sizes_are_the_autoscaler_counts_that_changed() -> None:
    assert deployment_sizes({"a-main": 2, "a-burst": 0}, {"a-main": 2, "a-burst": 1}) == {"a-burst": 0}
    assert deployment_sizes({"a-main": 2}, {}) == {"a-main": 2}


# --------------------------------------------------------------------- demands from controller state
def _core(no_capacity: bool = True, spot_policy: str | None = None) -> Any:
    group: dict[str, Any] = {"name": "main", "generation": "g1", "replicas": {"min": 1, "max": 6}, "commands": ["x"],
                             "resources": {"gpu": {"count": {"min": 2}}}}
    if spot_policy:
        group["placement"] = {"spot_policy": spot_policy}
    definition = parse_service({"name": "llm", "generation": "s1", "groups": [group], "scaling": {"metric": "rps", "target": 10}})
    st = ServiceState(definition=definition, groups={"main": GroupState(desired=5, no_capacity=no_capacity)})
    replica = ReplicaState(record=PlacementRecord("llm-main-g1-1", "llm", "main", "g1", "node-1", (0, 1), 0.0))
    agent = AgentState(record=AgentRecord("node-1", "http://10.60.0.20:8600", "t", {"fleet": "gpu", "node_group": "gpu-spot"}),
                       healthy=True)
    return SimpleNamespace(services={"llm": st}, replicas={replica.record.replica_id: replica}, agents={"node-1": agent})


def test_demands_count_the_replicas_without_a_host_per_accepting_group() -> None:
    core = _core()
    assert demands(core, [SPOT, OD]) == [Demand(4, {"gpu-spot": 2, "gpu-on-demand": 2})]
    assert demands(_core(spot_policy="on-demand"), [SPOT, OD]) == [Demand(4, {"gpu-on-demand": 2})]
    assert demands(_core(no_capacity=False), [SPOT, OD]) == []
    assert joined(core) == {"gpu-spot": 1}


class FakeScaler:
    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.calls: list[tuple[str, int]] = []

    async def get_size(self, name: str) -> int:
        return self.sizes[name]

    async def set_size(self, name: str, size: int) -> int:
        self.calls.append((name, size))
        self.sizes[name] = size
        return size

    async def remove_node(self, name: str, instance: str) -> int:
        self.calls.append((name, -1))
        self.sizes[name] -= 1
        return self.sizes[name]

    async def launch_errors(self, name: str) -> list[str]:
        return []

    async def close(self) -> None:
        pass


def test_node_group_sizer_asks_once_per_interval() -> None:
    scaler = FakeScaler({"gpu-spot": 1, "gpu-on-demand": 0})
    sizer = NodeGroupSizer(scaler, [SPOT, OD], interval=30)
    core = _core()
    asyncio.run(sizer.step(core, 100.0))
    # 4 replicas of 2 GPUs: 2 more spot nodes (1 joined, size 1 -> 3).
    assert scaler.calls == [("gpu-spot", 3)]
    asyncio.run(sizer.step(core, 110.0))
    assert scaler.calls == [("gpu-spot", 3)]
    asyncio.run(sizer.step(core, 131.0))  # both still booting: nothing more
    assert scaler.calls == [("gpu-spot", 3)]


# ------------------------------------------------------------------------------ AWS stand-in
class StandInAutoscaling:
    """The two calls of boto3's `autoscaling` client that AsgScaler makes."""

    def __init__(self) -> None:
        self.groups = {"gpu-spot": 1}
        self.calls: list[dict[str, Any]] = []

    def describe_auto_scaling_groups(self, AutoScalingGroupNames: list[str]) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"AutoScalingGroups": [{"AutoScalingGroupName": n, "DesiredCapacity": self.groups[n]}
                                      for n in AutoScalingGroupNames if n in self.groups]}

    def set_desired_capacity(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        self.groups[kwargs["AutoScalingGroupName"]] = kwargs["DesiredCapacity"]
        return {}


def test_asg_scaler_sets_desired_capacity() -> None:
    client = StandInAutoscaling()
    scaler = AsgScaler(client)
    assert asyncio.run(scaler.get_size("gpu-spot")) == 1
    assert asyncio.run(scaler.set_size("gpu-spot", 3)) == 3
    assert client.calls == [{"AutoScalingGroupName": "gpu-spot", "DesiredCapacity": 3, "HonorCooldown": False}]
    with pytest.raises(GpustackError, match="gpu-x does not exist"):
        asyncio.run(scaler.get_size("gpu-x"))


def test_a_failing_cloud_call_does_not_stall_the_tick() -> None:
    class Broken(FakeScaler):
        async def get_size(self, name: str) -> int:
            raise GpustackError("aws: throttled")

    asyncio.run(run_sizers(_core(), [NodeGroupSizer(Broken({}), [SPOT])], 1.0))


# ------------------------------------------------------------------- Kubernetes stand-in API server
def test_deployment_sizer_sets_the_autoscaler_count_through_the_api() -> None:
    async def scenario() -> None:
        stand_in = StandIn()
        stand_in.replicas = {"llm-main": 1}
        runner = web.AppRunner(stand_in.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        scaler = DeploymentScaler(from_token(f"http://127.0.0.1:{runner.addresses[0][1]}", TOKEN, NS), NS)
        try:
            sizer = DeploymentSizer(scaler, {("llm", "main"): "llm-main"})
            core = _core()
            await sizer.step(core, 1.0)
            assert stand_in.replicas["llm-main"] == 5
            patches = [r for r in stand_in.requests if r[0] == "PATCH"]
            assert len(patches) == 1 and patches[0][3] == {"spec": {"replicas": 5}}
            await sizer.step(core, 2.0)  # unchanged: no second call
            assert len([r for r in stand_in.requests if r[0] == "PATCH"]) == 1
            core.services["llm"].group("main").desired = 2
            await sizer.step(core, 3.0)
            assert stand_in.replicas["llm-main"] == 2
            assert await scaler.get_size("llm-main") == 2
            # A Deployment outside the RBAC names: one clear error, which run_sizers logs.
            forbidden = DeploymentSizer(scaler, {("llm", "main"): "other"})
            with pytest.raises(GpustackError, match="forbidden"):
                await forbidden.step(core, 4.0)
            await run_sizers(core, [forbidden], 5.0)
        finally:
            await scaler.close()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(scenario(), 60))


# ----------------------------------------------------------- the gateway process, end to end
class _ApiThread:
    """The stand-in API server on its own event loop in a thread, for a test that runs processes."""

    def __init__(self, stand_in: StandIn) -> None:
        self.stand_in = stand_in
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(stand_in.app())

    def __enter__(self) -> str:
        self.thread.start()

        async def start() -> int:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def test_gateway_scales_the_group_deployment_through_the_api(tmp_path: Path) -> None:
    stand_in = StandIn()
    stand_in.replicas = {"llm-main": 0}
    with _ApiThread(stand_in) as server:
        write_token_file(tmp_path / "sa-token", TOKEN)
        (tmp_path / "node-groups.json").write_text(json.dumps({
            "kind": "kubernetes", "namespace": NS, "server": server, "token_file": str(tmp_path / "sa-token"),
            "deployments": [{"service": "llm", "group": "main", "name": "llm-main"}]}))
        root = tmp_path / "gw"
        root.mkdir()
        gw = GatewayProcess(root=root, token=new_token(), admin_token=new_token(),
                            extra_flags=["--node-groups", str(tmp_path / "node-groups.json")])
        write_token_file(root / "token", gw.token)
        write_token_file(root / "admin-token", gw.admin_token)
        try:
            gw.start()
            gw.put_service(service_def("llm", echo_group("main", "m1", replicas=2)))
            wait_until(lambda: stand_in.replicas["llm-main"] == 2, timeout=60, what="deployment scaled to 2")
            gw.put_service(service_def("llm", echo_group("main", "m1", replicas=3), generation="s2"))
            wait_until(lambda: stand_in.replicas["llm-main"] == 3, timeout=60, what="deployment scaled to 3")
        finally:
            gw.stop_everything()


def test_a_bad_node_groups_file_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    for name in ("token", "admin-token"):
        write_token_file(tmp_path / name, new_token())
    (tmp_path / "ng.json").write_text('{"kind": "openstack"}')
    done = subprocess.run(
        [PYTHON, "-m", "gpustack_iac.runtime.gateway", "--token-file", str(tmp_path / "token"),
         "--admin-token-file", str(tmp_path / "admin-token"), "--state-dir", str(tmp_path / "s"),
         "--node-groups", str(tmp_path / "ng.json")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.startswith(f"gateway: {tmp_path / 'ng.json'}: not a node-groups file")
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------- spot fallback, against moto
def test_a_stalled_group_neither_counts_its_missing_nodes_nor_grows() -> None:
    demand = [Demand(4, {"gpu-spot": 2, "gpu-on-demand": 2})]
    sizes = {"gpu-spot": 3, "gpu-on-demand": 0}
    assert grow_sizes([SPOT, OD], sizes, {"gpu-spot": 1}, demand) == {}
    assert grow_sizes([SPOT, OD], sizes, {"gpu-spot": 1}, demand, frozenset({"gpu-spot"})) == {"gpu-on-demand": 2}


@pytest.fixture(scope="module")
def moto_clients(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """moto's server on a free loopback port (one per module: it takes seconds to start); a
    factory of boto3 clients for it."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    port = _free_port()
    with (tmp_path_factory.mktemp("moto") / "moto.log").open("wb") as log:
        proc = subprocess.Popen([PYTHON, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def client(service: str) -> Any:
            return boto3.client(service, region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                                aws_access_key_id="testing", aws_secret_access_key="testing")

        wait_until(lambda: _answers(port), timeout=120, what="moto's server")
        ec2 = client("ec2")
        image = ec2.describe_images()["Images"][0]["ImageId"]
        ec2.create_launch_template(LaunchTemplateName="gpu", LaunchTemplateData={"ImageId": image})
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def moto_autoscaling(moto_clients: Any) -> Any:
    """The two groups, fresh for each test (spot at 1, on-demand at 0); a boto3 `autoscaling` client."""
    scaling = moto_clients("autoscaling")
    existing = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[SPOT.name, OD.name])["AutoScalingGroups"]
    for group in existing:
        scaling.delete_auto_scaling_group(AutoScalingGroupName=group["AutoScalingGroupName"], ForceDelete=True)
    for spec, size in ((SPOT, 1), (OD, 0)):
        scaling.create_auto_scaling_group(AutoScalingGroupName=spec.name, LaunchTemplate={"LaunchTemplateName": "gpu"},
                                          MinSize=spec.min, MaxSize=spec.max, DesiredCapacity=size,
                                          AvailabilityZones=["us-east-1a"])
    return scaling


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).close()
        return True
    except OSError:
        return False


def test_spot_that_never_fills_falls_back_to_on_demand_within_the_bound(moto_autoscaling: Any) -> None:
    """Ticks at chosen times (no sleeping): spot grows first; its nodes never join; once the bound
    has passed since they were asked for, on-demand grows instead, and moto holds both sizes."""
    sizer = NodeGroupSizer(AsgScaler(moto_autoscaling), [SPOT, OD], interval=1, fallback_after=60)
    core = _core()  # 4 replicas of 2 GPUs without a host; 1 spot node joined

    def desired() -> dict[str, int]:
        groups = moto_autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[SPOT.name, OD.name])
        return {g["AutoScalingGroupName"]: g["DesiredCapacity"] for g in groups["AutoScalingGroups"]}

    asyncio.run(sizer.step(core, 100.0))
    assert desired() == {SPOT.name: 3, OD.name: 0}
    asyncio.run(sizer.step(core, 159.0))  # still within the bound: the spot nodes count as booting
    assert desired() == {SPOT.name: 3, OD.name: 0}
    asyncio.run(sizer.step(core, 160.0))
    assert desired() == {SPOT.name: 3, OD.name: 2}


# ------------------------------------------------------------------ idle scale-in with draining
IDLE_SPOT = dataclasses.replace(SPOT, idle_duration=60)


def test_capacity_and_quota_errors_are_told_from_others() -> None:
    from gpustack_iac.runtime.scaling.nodegroups import capacity_error

    assert capacity_error("Launching EC2 instance failed. InsufficientInstanceCapacity") == "capacity: InsufficientInstanceCapacity"
    assert capacity_error("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: no") == "capacity: ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
    assert capacity_error("azure: HTTP 409: SkuNotAvailable: ...") == "capacity: SkuNotAvailable"
    assert capacity_error("You have requested more vCPU capacity than allowed. VcpuLimitExceeded") == "quota: VcpuLimitExceeded"
    assert capacity_error("QUOTA_EXCEEDED: Quota 'NVIDIA_A100_GPUS' exceeded") == "quota: QUOTA_EXCEEDED"
    assert capacity_error("The image id 'ami-x' does not exist") is None


def test_idle_victims_wait_their_duration_keep_the_minimum_and_go_longest_idle_first() -> None:
    idle = [IdleNode("i-b", "gpu-spot", 20.0), IdleNode("i-a", "gpu-spot", 10.0), IdleNode("i-c", "gpu-spot", 50.0)]
    # At 100: i-a and i-b have been idle >= 60 s, i-c not yet.
    assert idle_victims([IDLE_SPOT], {"gpu-spot": 4}, idle, 100.0) == [idle[1], idle[0]]
    # Size 2, min 1: one may go, the longest idle.
    assert idle_victims([IDLE_SPOT], {"gpu-spot": 2}, idle, 100.0) == [idle[1]]
    assert idle_victims([IDLE_SPOT], {"gpu-spot": 1}, idle, 100.0) == []
    # No idle_duration: nodes are kept; a group that could host waiting replicas keeps them too.
    assert idle_victims([SPOT], {"gpu-spot": 4}, idle, 100.0) == []
    assert idle_victims([IDLE_SPOT], {"gpu-spot": 4}, idle, 100.0, frozenset({"gpu-spot"})) == []


def test_the_node_groups_file_carries_idle_duration(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    path = tmp_path / "ng.json"
    path.write_text(json.dumps({"kind": "aws", "region": "us-east-1", "groups": [
        {"name": "g", "fleet": "f", "min": 0, "max": 2, "idle_duration": 300}, {"name": "h", "fleet": "f", "min": 0, "max": 2}]}))
    (sizer,) = load_sizers(path)
    assert isinstance(sizer, NodeGroupSizer)
    assert [s.idle_duration for s in sizer.specs] == [300, None]


def _real_core(tmp_path: Path, agents: list[str], busy: str) -> ControllerCore:
    """A controller core (no loop) whose agents are the group's instances; `busy` holds the one replica."""
    core = ControllerCore(Store(tmp_path / "state.db"), RoutingTable(), Metrics())
    shape = _core(no_capacity=False)
    core.services = shape.services
    core.services["llm"].group("main").desired = 1
    for name in agents:
        labels = {"fleet": "gpu", "node_group": SPOT.name}
        core.agents[name] = AgentState(record=AgentRecord(name, f"http://10.60.0.{len(core.agents) + 20}:8600", "t", labels),
                                       healthy=True)
    replica = ReplicaState(record=PlacementRecord("llm-main-g1-1", "llm", "main", "g1", busy, (0, 1), 0.0), ready=True)
    core.replicas = {replica.id: replica}
    return core


def _instances(scaling: Any, group: str) -> dict[str, str]:
    groups = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    return {i["InstanceId"]: i["LifecycleState"] for i in groups[0]["Instances"]}


def test_growth_then_idle_scale_in_terminates_the_idle_instances_and_keeps_the_busy_one(
        moto_autoscaling: Any, tmp_path: Path) -> None:
    """Against moto's Auto Scaling: the group grows for replicas without a host; once placed on one
    of the new nodes, the two others idle past `idle_duration` are cordoned, drained and
    terminated one by one with the size decremented; the busy instance is never touched."""
    scaler = AsgScaler(moto_autoscaling)
    sizer = NodeGroupSizer(scaler, [IDLE_SPOT, OD], interval=1, fallback_after=600)
    asyncio.run(sizer.step(_core(), 100.0))  # 4 replicas of 2 GPUs without a host: spot 1 -> 3
    assert asyncio.run(scaler.get_size(SPOT.name)) == 3
    instances = sorted(_instances(moto_autoscaling, SPOT.name))
    assert len(instances) == 3
    busy, *idle = instances

    async def scenario() -> ControllerCore:
        core = _real_core(tmp_path, instances, busy)
        for now in (200.0, 259.0):  # idle since 200: not yet due at 259
            await sizer.step(core, now)
        await sizer.settle()
        assert sizer.removed == [] and set(core.agents) == set(instances)
        await sizer.step(core, 260.0)
        assert set(core.draining) | {busy} == set(instances)  # cordoned at once: nothing is placed there
        await sizer.settle()
        return core

    core = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert sorted(n.agent for n in sizer.removed) == sorted(idle)
    assert set(core.agents) == {busy} and not core.draining
    assert asyncio.run(scaler.get_size(SPOT.name)) == 1
    left = _instances(moto_autoscaling, SPOT.name)
    assert busy in left and left[busy] == "InService"
    assert not set(idle) & {i for i, state in left.items() if state == "InService"}
    # At the minimum now: a later idle period removes nothing more (the busy node is not idle anyway).
    asyncio.run(sizer.step(core, 1000.0))
    assert asyncio.run(scaler.get_size(SPOT.name)) == 1


class CapacityErrors:
    """moto's Auto Scaling client with launch failures the test injects: moto launches whatever it
    is asked for, so "no capacity in this zone" is added to its scaling activities here."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.failures: dict[str, list[dict[str, Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def fail(self, group: str, message: str) -> None:
        import datetime as dt

        self.failures.setdefault(group, []).append({
            "ActivityId": f"injected-{len(self.failures[group])}", "AutoScalingGroupName": group, "StatusCode": "Failed",
            "StartTime": dt.datetime.now(dt.timezone.utc), "Description": "Launching a new EC2 instance.  Status Reason: ...",
            "StatusMessage": message})

    def describe_scaling_activities(self, **kwargs: Any) -> dict[str, Any]:
        answer = self._client.describe_scaling_activities(**kwargs)  # moto's own (successful launches)
        return {**answer, "Activities": self.failures.get(kwargs["AutoScalingGroupName"], []) + answer["Activities"]}


def test_a_capacity_error_moves_the_demand_to_the_next_group_before_the_bound(moto_autoscaling: Any) -> None:
    """The first group's launches fail with InsufficientInstanceCapacity (its zone has none): on the
    next look the controller grows the next group, long before `fallback_after`, and says why."""
    client = CapacityErrors(moto_autoscaling)
    sizer = NodeGroupSizer(AsgScaler(client), [SPOT, OD], interval=1, fallback_after=600)
    core = _core()

    def desired() -> dict[str, int]:
        groups = moto_autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[SPOT.name, OD.name])
        return {g["AutoScalingGroupName"]: g["DesiredCapacity"] for g in groups["AutoScalingGroups"]}

    asyncio.run(sizer.step(core, 100.0))
    assert desired() == {SPOT.name: 3, OD.name: 0}
    asyncio.run(sizer.step(core, 101.0))  # no failure yet: the nodes count as booting
    assert desired() == {SPOT.name: 3, OD.name: 0}
    client.fail(SPOT.name, "We currently do not have sufficient g5.12xlarge capacity in the Availability Zone you "
                           "requested (us-east-1a). Launching EC2 instance failed. InsufficientInstanceCapacity")
    asyncio.run(sizer.step(core, 102.0))
    assert desired() == {SPOT.name: 3, OD.name: 2}
    assert core.services["llm"].group("main").capacity == f"node group {SPOT.name}: capacity: InsufficientInstanceCapacity"


def test_scale_in_refuses_an_instance_of_another_group(moto_autoscaling: Any) -> None:
    scaler = AsgScaler(moto_autoscaling)
    (other,) = _instances(moto_autoscaling, SPOT.name)
    with pytest.raises(GpustackError, match=f"{other} is not in auto scaling group {OD.name}"):
        asyncio.run(scaler.remove_node(OD.name, other))
    assert asyncio.run(scaler.get_size(SPOT.name)) == 1


def test_a_replica_resets_the_idle_timer(tmp_path: Path) -> None:
    """Idle means no replica for the whole `idle_duration`: one placed meanwhile restarts the count."""
    scaler = FakeScaler({SPOT.name: 2, OD.name: 0})
    sizer = NodeGroupSizer(scaler, [IDLE_SPOT, OD], interval=1)

    async def scenario() -> None:
        core = _real_core(tmp_path, ["i-busy", "i-idle"], "i-busy")
        await sizer.step(core, 0.0)
        visiting = ReplicaState(record=PlacementRecord("llm-main-g1-2", "llm", "main", "g1", "i-idle", (0, 1), 0.0))
        core.replicas[visiting.id] = visiting
        await sizer.step(core, 30.0)
        del core.replicas[visiting.id]
        for now in (40.0, 99.0):
            await sizer.step(core, now)
        await sizer.settle()
        assert scaler.calls == [] and set(core.agents) == {"i-busy", "i-idle"}
        await sizer.step(core, 100.0)
        await sizer.settle()
        assert scaler.calls == [(SPOT.name, -1)] and [n.agent for n in sizer.removed] == ["i-idle"]
        assert set(core.agents) == {"i-busy"}

    asyncio.run(asyncio.wait_for(scenario(), 60))
