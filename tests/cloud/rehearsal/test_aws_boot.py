"""Boot rehearsal, AWS: the rendered gateway and node boot scripts run in network-namespace
instances against moto's server (S3, SSM, Auto Scaling) and the IMDSv2 stub. The runtime comes
from the stand-in bucket and is checked by SHA-256; the units start under unitrun.py; the node's
agent joins the controller and a replica is served through the gateway. A tampered wheel is refused."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.cloud.rehearsal import aws
from tests.cloud.rehearsal.harness import (CONTROL_PORT, assert_refused, boot_gateway, call, join_and_serve, logs,
                                          units_and_runtime, wait_for)
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


def test_the_controller_grows_the_node_group_in_moto(gateway: Instance, world: aws.AwsWorld) -> None:
    """A replica no joined host can hold: the controller on the rehearsed gateway (boto3 with the
    instance-profile credentials from the metadata stub) raises the Auto Scaling group's desired
    capacity in moto from 0 to the one node the replica needs."""
    aws.client("autoscaling", world.moto).set_desired_capacity(AutoScalingGroupName=world.asg, DesiredCapacity=0)
    big = {"name": "big", "generation": "g1", "auth": True,
           "probe": {"url": "/", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.5},
           "groups": [{"name": "main", "generation": "g1", "replicas": {"min": 1, "max": 1}, "commands": ["true"],
                       "env": {}, "resources": {"cpu": {"min": 4096}, "memory_bytes": {"min": 0},
                                                "disk_bytes": {"min": 0}, "gpu": None}}]}
    controller = f"http://{gateway.address}:{CONTROL_PORT}"
    status, body = call("PUT", f"{controller}/control/services/big", world.admin_token, big)
    assert status in (200, 201), body
    wait_for(lambda: aws.desired_capacity(world) == 1, "the group's desired capacity became 1",
             explain=lambda: logs(gateway))
    call("DELETE", f"{controller}/control/services/big", world.admin_token)
