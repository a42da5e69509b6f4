"""AWS defects a review of the plan found (issue 18), each pinned by the resource graph under mocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpustack_iac.errors import ConfigError
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import Graph, compile_dir, run, write

pytestmark = need_sdk("pulumi_aws")

FLEET = """type: fleet
name: big
backends: [aws]
regions: [us-east-1]
nodes: 0..2
resources:
  gpu: A10G:1
"""
GATEWAY = """type: gateway
name: gw
backend: aws
region: us-east-1
"""


def _plan(tmp_path: Path, gateway: str = GATEWAY) -> Graph:
    write(tmp_path, {"f.gpustack.yml": FLEET, "g.gpustack.yml": gateway})
    return run(tmp_path, tmp_path)


def test_describe_scaling_groups_is_granted_without_a_resource_tag_condition(tmp_path: Path) -> None:
    # Describe* actions support no resource-level condition: under one, the call is AccessDenied.
    policy = json.loads(_plan(tmp_path).one("aws:iam/rolePolicy:RolePolicy", "gw-gateway").inputs["policy"])
    by_action = {a: s for s in policy["Statement"] for a in s["Action"]}
    assert "Condition" not in by_action["autoscaling:DescribeAutoScalingGroups"]
    assert by_action["autoscaling:SetDesiredCapacity"]["Condition"] == {
        "StringEquals": {"autoscaling:ResourceTag/gpustack-stack": "proj/dev"}}
    # Idle scale-in terminates one instance of this stack's groups only; finding its group only reads.
    assert by_action["autoscaling:TerminateInstanceInAutoScalingGroup"] is by_action["autoscaling:SetDesiredCapacity"]
    assert "Condition" not in by_action["autoscaling:DescribeAutoScalingInstances"]
    assert "Condition" not in by_action["autoscaling:DescribeScalingActivities"]  # launch failures (capacity)


def test_fleet_idle_duration_reaches_the_controller_in_seconds(tmp_path: Path) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET + "idle_duration: 10m\n", "g.gpustack.yml": GATEWAY})
    script = run(tmp_path, tmp_path).one("aws:ec2/instance:Instance", "gw").inputs["userData"]
    body = script.split("<<'GPUSTACK_NODE_GROUPS'\n", 1)[1].split("\nGPUSTACK_NODE_GROUPS\n", 1)[0]
    assert [g["idle_duration"] for g in json.loads(body)["groups"]] == [600]


def test_a_later_up_does_not_replace_the_gateway_and_a_replacement_frees_its_ip_first(tmp_path: Path) -> None:
    gw = _plan(tmp_path).one("aws:ec2/instance:Instance", "gw")
    assert gw.inputs["ami"].startswith("resolve:ssm:")
    assert "ami" in gw.ignore_changes  # the latest image changes under the same name
    assert gw.inputs["privateIp"] == "10.60.0.10" and gw.delete_before_replace


def test_nodes_are_in_private_subnets_with_a_nat_gateway(tmp_path: Path) -> None:
    graph = _plan(tmp_path)
    subnets = {s.name: s.inputs for s in graph.of_type("aws:ec2/subnet:Subnet")}
    group = graph.one("aws:autoscaling/group:Group", "big")
    private = [n for n, s in subnets.items() if not s["mapPublicIpOnLaunch"] and n.endswith("-private")]
    assert len(private) == 2 and len(group.inputs["vpcZoneIdentifiers"]) == 2
    assert all(f"{n}-id" in group.inputs["vpcZoneIdentifiers"] for n in private)
    graph.one("aws:ec2/natGateway:NatGateway")
    routes = [r.inputs["routes"] for r in graph.of_type("aws:ec2/routeTable:RouteTable")]
    assert any(r[0].get("natGatewayId") for r in routes)


def test_public_ip_false_plans_no_gateway_eip_and_an_internal_load_balancer(tmp_path: Path) -> None:
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
    graph = _plan(tmp_path, GATEWAY + f"public_ip: false\ndomain: llm.example.com\ncertificate: {{type: acm, arn: '{arn}'}}\n")
    assert [e.name for e in graph.of_type("aws:ec2/eip:Eip")] == ["gpustack-us-east-1-nat"]  # only the NAT's
    assert graph.one("aws:lb/loadBalancer:LoadBalancer").inputs["internal"] is True
    gateway_subnet = graph.one("aws:ec2/subnet:Subnet", "gw-gateway").inputs
    assert gateway_subnet["mapPublicIpOnLaunch"] is False and gateway_subnet["cidrBlock"] == "10.60.0.0/24"
    association = graph.one("aws:ec2/routeTableAssociation:RouteTableAssociation", "gw-gateway").inputs
    assert association["routeTableId"] == "gpustack-us-east-1-private-id"


def test_cluster_placement_is_a_placement_group_in_one_zone_with_efa(tmp_path: Path) -> None:
    fleet = FLEET.replace("A10G:1", "H100:8").replace("nodes: 0..2", "nodes: 0..2\nplacement: cluster")
    write(tmp_path, {"f.gpustack.yml": fleet})
    graph = run(tmp_path, tmp_path)
    assert graph.one("aws:ec2/placementGroup:PlacementGroup", "big").inputs["strategy"] == "cluster"
    template = graph.one("aws:ec2/launchTemplate:LaunchTemplate", "big").inputs
    assert template["instanceType"] == "p5.48xlarge" and template["placement"] == {"groupName": "gpustack-proj-dev-big"}
    [nic] = template["networkInterfaces"]
    assert nic["interfaceType"] == "efa" and "vpcSecurityGroupIds" not in template
    assert len(graph.one("aws:autoscaling/group:Group", "big").inputs["vpcZoneIdentifiers"]) == 1


def test_a_capacity_reservation_is_targeted_and_refused_with_spot(tmp_path: Path) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET + "reservation: cr-0123456789abcdef0\n"})
    template = run(tmp_path, tmp_path).one("aws:ec2/launchTemplate:LaunchTemplate", "big").inputs
    assert template["capacityReservationSpecification"] == {
        "capacityReservationTarget": {"capacityReservationId": "cr-0123456789abcdef0"}}
    write(tmp_path, {"f.gpustack.yml": FLEET + "reservation: cr-0123456789abcdef0\nspot_policy: spot\n"})
    with pytest.raises(ConfigError) as caught:
        compile_dir(tmp_path, tmp_path)
    assert [d.path for d in caught.value.diagnostics] == ["reservation"]


@pytest.mark.parametrize("backend, region, prop, value", [
    ("gcp", "us-central1", "placement", "cluster"), ("azure", "eastus", "reservation", "my-reservation"),
    ("aws", "us-east-1", "blocks", "4")])
def test_placement_properties_a_backend_cannot_honour_are_refused(backend: str, region: str, prop: str, value: str,
                                                                  tmp_path: Path) -> None:
    fleet = FLEET.replace("[aws]", f"[{backend}]").replace("[us-east-1]", f"[{region}]")
    fleet = fleet if backend == "aws" else fleet.replace("A10G:1", "A100:80GB:2")
    write(tmp_path, {"f.gpustack.yml": fleet + f"{prop}: {value}\n"})
    with pytest.raises(ConfigError) as caught:
        compile_dir(tmp_path, tmp_path)
    assert len(caught.value.diagnostics) == 1, [d.message for d in caught.value.diagnostics]
    diag = caught.value.diagnostics[0]
    assert diag.path == prop and "not implemented" in diag.message and backend in diag.message
