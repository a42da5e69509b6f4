"""Boot rehearsal, GCP: the rendered gateway and node boot scripts run in network-namespace
instances against gcp-storage-emulator (the runtime's bucket), the metadata stub (service-account
token, identity) and its Secret Manager stand-in. Same checks as AWS's."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.cloud.rehearsal import gcp
from tests.cloud.rehearsal.conftest import stand_in
from tests.cloud.rehearsal.harness import CONTROL_PORT, assert_refused, boot_gateway, join_and_serve, units_and_runtime
from tests.cloud.rehearsal.netns import Instance, Network

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def storage(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["start", "-H", "{host}", "--port", "{port}", "-q", "-M", "--default-bucket", gcp.BUCKET]
    with stand_in("gcp_storage_emulator", "gcp-storage-emulator", "from gcp_storage_emulator.__main__ import main; main()",
                  args, network, tmp_path_factory.mktemp("gcs") / "gcs.log") as url:
        yield url


@pytest.fixture(scope="module")
def world(storage: str, metadata: Any, runtime_wheels: Any) -> gcp.GcpWorld:
    world = gcp.create_world(storage, metadata)
    gcp.upload(storage, *runtime_wheels)
    return world


@pytest.fixture(scope="module")
def gateway(network: Network, world: gcp.GcpWorld, runtime_wheels: Any) -> Iterator[Instance]:
    inst = network.add("gcpgw")
    boot_gateway(inst, gcp.gateway_script(world, runtime_wheels[0]), world.admin_token)
    yield inst
    inst.kill_all()


def test_gateway_boot_installs_the_pinned_runtime_and_runs_units(gateway: Instance, world: gcp.GcpWorld) -> None:
    assert units_and_runtime(gateway) == ["gpustack-gateway.service", "gpustack-joins.service"]
    assert gateway.path("/var/lib/gpustack/token").read_text() == world.token
    assert (gateway.path("/var/lib/gpustack/joins") / "gpu.token").read_text() == world.tokens[gcp.PREFIX + "join-gpu"]


def test_node_joins_and_serves_a_replica_through_the_gateway(network: Network, gateway: Instance, world: gcp.GcpWorld,
                                                             runtime_wheels: Any,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    node = network.add("gcpnode")
    controller = f"http://{gateway.address}:{CONTROL_PORT}"
    join_and_serve(node, gcp.node_script(world, runtime_wheels[0], controller), gateway, world.admin_token,
                   world.token, tmp_path_factory.mktemp("site"))
    assert units_and_runtime(node) == ["gpustack-agent.service"]


def test_a_tampered_wheel_is_refused(network: Network, world: gcp.GcpWorld, runtime_wheels: Any) -> None:
    tampered = gcp.upload(world.storage, *runtime_wheels, tamper="gpustack_iac-")
    inst = network.add("gcpbad")
    assert_refused(inst, inst.boot(gcp.node_script(world, tampered, "http://127.0.0.1:9")))
