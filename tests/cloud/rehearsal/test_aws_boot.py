"""Boot rehearsal, AWS: the rendered gateway and node boot scripts run in network-namespace
instances against moto's server (S3, SSM, Auto Scaling) and the IMDSv2 stub. The runtime comes
from the stand-in bucket and is checked by SHA-256; the units start under unitrun.py; the node's
agent joins the controller and a replica is served through the gateway. A tampered wheel is refused."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.cloud.rehearsal import aws
from tests.cloud.rehearsal.harness import CONTROL_PORT, assert_refused, boot_gateway, join_and_serve, units_and_runtime
from tests.cloud.rehearsal.netns import Instance, Network

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(moto: str, metadata: Any, runtime_wheels: Any) -> aws.AwsWorld:
    world = aws.create_world(moto, metadata)
    aws.upload(world.moto, *runtime_wheels)
    return world


@pytest.fixture(scope="module")
def gateway(network: Network, world: aws.AwsWorld, runtime_wheels: Any) -> Iterator[Instance]:
    inst = network.add("awsgw")
    boot_gateway(inst, aws.gateway_script(world, runtime_wheels[0]), world.admin_token)
    yield inst
    inst.kill_all()


def test_gateway_boot_installs_the_pinned_runtime_and_runs_units(gateway: Instance, world: aws.AwsWorld) -> None:
    assert units_and_runtime(gateway) == ["gpustack-gateway.service", "gpustack-joins.service"]
    token = gateway.path("/var/lib/gpustack/admin.token")
    assert token.read_text() == world.admin_token and token.stat().st_mode & 0o777 == 0o600
    assert (gateway.path("/var/lib/gpustack/joins") / "gpu.token").read_text() == world.tokens[f"{aws.PREFIX}/joins/gpu"]
    assert world.metadata.identity.refused == 0, "every metadata request used an IMDSv2 session token"


def test_node_joins_and_serves_a_replica_through_the_gateway(network: Network, gateway: Instance, world: aws.AwsWorld,
                                                             runtime_wheels: Any,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    node = network.add("awsnode")
    controller = f"http://{gateway.address}:{CONTROL_PORT}"
    join_and_serve(node, aws.node_script(world, runtime_wheels[0], controller), gateway, world.admin_token,
                   world.token, tmp_path_factory.mktemp("site"))
    assert units_and_runtime(node) == ["gpustack-agent.service"]


def test_a_tampered_wheel_is_refused(network: Network, world: aws.AwsWorld, runtime_wheels: Any) -> None:
    tampered = aws.upload(world.moto, *runtime_wheels, tamper="gpustack_iac-")
    inst = network.add("awsbad")
    assert_refused(inst, inst.boot(aws.node_script(world, tampered, "http://127.0.0.1:9")))
