"""Boot rehearsal, AWS, GCP and Azure: the gateway and node boot scripts each backend renders run in
network-namespace instances against local stand-ins (moto's server; gcp-storage-emulator; Azurite
over HTTPS with OAuth; the metadata stub with its Secret Manager and Key Vault stand-ins). The
runtime comes from the stand-in storage with the instance's identity and is checked by SHA-256;
the units start under unitrun.py; the node's agent joins the controller and a replica is served
through the gateway. A tampered wheel is refused. The controller grows the node group on each."""

from __future__ import annotations

from typing import Iterator

import pytest

from gpustack_iac.providers.runtime_bundle import CloudRuntime
from tests.cloud.rehearsal.harness import (CONTROL_PORT, World, assert_refused, boot_gateway, call, join_and_serve, logs,
                                          units_and_runtime, wait_for)
from tests.cloud.rehearsal.netns import Instance, Network

# Building the session's wheelhouse counts against the first test; a loaded machine takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module", params=["aws", "gcp", "azure"])
def world(request: pytest.FixtureRequest, runtime: CloudRuntime) -> World:
    made: World = request.getfixturevalue(f"{request.param}_world")
    made.upload(runtime)
    return made


@pytest.fixture(scope="module")
def gateway(network: Network, world: World, runtime: CloudRuntime) -> Iterator[Instance]:
    inst = network.add(f"{world.cloud}gw")
    boot_gateway(inst, world.gateway_script(runtime), world.tokens["admin"], env=world.boot_env)
    yield inst
    inst.kill_all()


def test_gateway_boot_installs_the_pinned_runtime_and_runs_units(gateway: Instance, world: World) -> None:
    assert units_and_runtime(gateway) == ["gpustack-gateway.service", "gpustack-joins.service"]
    token = gateway.path("/var/lib/gpustack/admin.token")
    assert token.read_text() == world.tokens["admin"] and token.stat().st_mode & 0o777 == 0o600
    assert (gateway.path("/var/lib/gpustack/joins") / "gpu.token").read_text() == world.tokens["join"]
    assert world.metadata.identity.refused == 0, "every metadata request carried the cloud's header or session token"


def test_node_joins_and_serves_a_replica_through_the_gateway(network: Network, gateway: Instance, world: World,
                                                             runtime: CloudRuntime,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    node = network.add(f"{world.cloud}node")
    controller = f"http://{gateway.address}:{CONTROL_PORT}"
    join_and_serve(node, world.node_script(runtime, controller), gateway, world.tokens["admin"], world.tokens["token"],
                   tmp_path_factory.mktemp("site"), env=world.boot_env)
    assert units_and_runtime(node) == ["gpustack-agent.service"]
    assert node.path("/var/lib/gpustack/agent.token").read_text() == world.tokens["agent"]


def test_a_tampered_wheel_is_refused(network: Network, world: World, runtime: CloudRuntime) -> None:
    bad = world.upload(runtime, tamper="gpustack_iac-")
    inst = network.add(f"{world.cloud}bad")
    assert_refused(inst, inst.boot(world.node_script(bad, "http://127.0.0.1:9"), env=world.boot_env))


def test_the_controller_grows_the_node_group(gateway: Instance, world: World) -> None:
    """A replica no joined host can hold: the controller on the rehearsed gateway, with the instance's
    identity from the metadata stub, grows the node group its backend rendered into the gateway's
    --node-groups file from 0 to the one node the replica needs: the Auto Scaling group's desired
    capacity in moto (boto3), the regional MIG's target size in the Compute stand-in (REST)."""
    if not world.sizes_groups:
        pytest.skip(f"the controller does not size {world.cloud} node groups yet (docs/cloud.md#not-done-yet)")
    world.set_group_size(0)
    big = {"name": "big", "generation": "g1", "auth": True,
           "probe": {"url": "/", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.5},
           "groups": [{"name": "main", "generation": "g1", "replicas": {"min": 1, "max": 1}, "commands": ["true"],
                       "env": {}, "resources": {"cpu": {"min": 4096}, "memory_bytes": {"min": 0},
                                                "disk_bytes": {"min": 0}, "gpu": None}}]}
    controller = f"http://{gateway.address}:{CONTROL_PORT}"
    status, body = call("PUT", f"{controller}/control/services/big", world.tokens["admin"], big)
    assert status in (200, 201), body
    wait_for(lambda: world.group_size() == 1, "the group's size became 1", explain=lambda: logs(gateway))
    call("DELETE", f"{controller}/control/services/big", world.tokens["admin"])
