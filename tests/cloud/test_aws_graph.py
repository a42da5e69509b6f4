"""The AWS stack as a resource graph under Pulumi mocks: what a reviewer of the plan would check."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from gpustack_iac.errors import ConfigError, GpustackError
from gpustack_iac.runtime.controller.sizing_config import load_sizers
from gpustack_iac.runtime.agent import __main__ as agent_main
from tests.cloud.bootscripts import unit_argv
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import compile_dir, run, secret_value, write

pytestmark = need_sdk("pulumi_aws")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "aws"

FLEET = """type: fleet
name: big
backends: [aws]
regions: [us-east-1]
nodes: 1..3
spot_policy: {policy}
ssh_from: [203.0.113.0/24]
resources:
  gpu: {gpu}
"""
GATEWAY = """type: gateway
name: gw
backend: aws
region: us-east-1
domain: llm.example.com
certificate: lets-encrypt
"""


def test_a100_80gb_2_in_us_east_1_is_a_plan_error_naming_the_fleet(tmp_path: Path) -> None:
    # AWS sells A100 80GB only as p4de.24xlarge with 8 GPUs: nothing has exactly 2.
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy="on-demand", gpu="A100:80GB:2")})
    with pytest.raises(ConfigError) as caught:
        compile_dir(tmp_path, tmp_path)
    [diag] = caught.value.diagnostics
    assert diag.path == "resources" and "fleet big" in diag.message and "us-east-1" in diag.message
    assert "A100:80GB:2" in diag.message


def test_a100_80gb_8_in_us_east_1_is_p4de(tmp_path: Path) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy="on-demand", gpu="A100:80GB:8")})
    graph = run(tmp_path, tmp_path)
    template = graph.one("aws:ec2/launchTemplate:LaunchTemplate", "big")
    assert template.inputs["instanceType"] == "p4de.24xlarge"
    group = graph.one("aws:autoscaling/group:Group", "big")
    assert [o["instanceType"] for o in group.inputs["mixedInstancesPolicy"]["launchTemplate"]["overrides"]] == ["p4de.24xlarge"]
    assert template.inputs["imageId"].startswith("resolve:ssm:/aws/service/deeplearning/")


@pytest.mark.parametrize("policy,expected", [
    ("spot", {"big": (0, True)}),
    ("on-demand", {"big": (100, False)}),
    ("auto", {"big-spot": (0, True), "big-on-demand": (100, False)}),
])
def test_spot_policy_maps_to_the_mixed_instances_distribution(tmp_path: Path, policy: str,
                                                              expected: dict[str, tuple[int, bool]]) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy=policy, gpu="A10G:1")})
    graph = run(tmp_path, tmp_path)
    groups = {g.name: g for g in graph.of_type("aws:autoscaling/group:Group")}
    assert set(groups) == set(expected)
    for name, (on_demand_pct, rebalance) in expected.items():
        dist = groups[name].inputs["mixedInstancesPolicy"]["instancesDistribution"]
        assert dist["onDemandPercentageAboveBaseCapacity"] == on_demand_pct and dist["onDemandBaseCapacity"] == 0
        assert dist["spotAllocationStrategy"] == "price-capacity-optimized"
        assert groups[name].inputs["capacityRebalance"] is rebalance
        overrides = [o["instanceType"] for o in groups[name].inputs["mixedInstancesPolicy"]["launchTemplate"]["overrides"]]
        assert overrides == ["g5.xlarge", "g5.2xlarge"]
        # nodes: 1..3 bounds the group; the controller owns the desired capacity.
        assert groups[name].inputs["maxSize"] == 3 and groups[name].ignore_changes == ["desiredCapacity"]
    if policy == "auto":
        assert groups["big-spot"].inputs["minSize"] == 1 and groups["big-on-demand"].inputs["minSize"] == 0


def test_security_groups_open_only_the_needed_ports(tmp_path: Path) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy="spot", gpu="A10G:1"), "g.gpustack.yml": GATEWAY})
    graph = run(tmp_path, tmp_path)
    node = graph.one("aws:ec2/securityGroup:SecurityGroup", "big").inputs["ingress"]
    assert sorted((r["fromPort"], r["toPort"], tuple(r["cidrBlocks"])) for r in node) == [
        (22, 22, ("203.0.113.0/24",)), (8600, 8600, ("10.60.0.0/16",))]
    gw = graph.one("aws:ec2/securityGroup:SecurityGroup", "gw").inputs["ingress"]
    # No ssh_from on the gateway: SSH stays closed and the control API is open only to the VPC
    # (agents joining); only 80 and 443 are public.
    assert sorted((r["fromPort"], tuple(r["cidrBlocks"])) for r in gw) == [
        (80, ("0.0.0.0/0",)), (443, ("0.0.0.0/0",)), (8443, ("10.60.0.0/16",))]


def test_user_data_bootstraps_the_agent_and_holds_no_token(tmp_path: Path) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy="spot", gpu="A10G:1"), "g.gpustack.yml": GATEWAY})
    graph = run(tmp_path, tmp_path)
    script = base64.b64decode(graph.one("aws:ec2/launchTemplate:LaunchTemplate", "big").inputs["userData"]).decode()
    argv = unit_argv(script, "gpustack-agent")
    assert argv[1:3] == ["-m", "gpustack_iac.runtime.agent"] and argv[argv.index("--token-file") + 1] == "/var/lib/gpustack/agent.token"
    assert "secret /gpustack/proj/dev/fleets/big/agent-token /var/lib/gpustack/agent.token" in script
    for param in graph.of_type("aws:ssm/parameter:Parameter"):
        assert param.inputs["type"] == "SecureString" and param.ignore_changes == ["value"]
        token = secret_value(param.inputs["value"])
        assert len(token) >= 32
        # The token is only in its own parameter: not in user data, tags, policies or anything else.
        assert token not in graph.dump_without(param)
    # The node role reads exactly its two parameters (the agent token and the fleet's join token)
    # and its runtime's objects (tests/cloud/test_runtime_wiring.py).
    policy = json.loads(graph.one("aws:iam/rolePolicy:RolePolicy", "big-node").inputs["policy"])
    assert policy["Statement"][0] == {"Effect": "Allow", "Action": ["ssm:GetParameter"],
                                      "Resource": ["arn:aws:mock:::big-agent-token", "arn:aws:mock:::big-join-token"]}
    assert [s["Action"] for s in policy["Statement"][1:]] == [["s3:GetObject"]]


def test_nodes_join_the_controller_by_secret_name_and_the_gateway_admits_them(tmp_path: Path) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy="auto", gpu="A10G:1"), "g.gpustack.yml": GATEWAY})
    graph = run(tmp_path, tmp_path)
    join = graph.one("aws:ssm/parameter:Parameter", "big-join-token")
    assert join.inputs["name"] == "/gpustack/proj/dev/joins/big" and join.inputs["type"] == "SecureString"
    join_value = secret_value(join.inputs["value"])
    assert join_value not in graph.dump_without(join)
    for group in ("big-spot", "big-on-demand"):
        script = base64.b64decode(graph.one("aws:ec2/launchTemplate:LaunchTemplate", group).inputs["userData"]).decode()
        # The controller's URL and the join secret's name, never its value.
        assert "secret /gpustack/proj/dev/joins/big /var/lib/gpustack/join.token" in script
        assert graph.one("aws:autoscaling/group:Group", group).inputs["name"] == f"gpustack-proj-dev-{group}"
        # The agent's own parser takes the command line its unit runs.
        args = agent_main.parse_args(unit_argv(script, "gpustack-agent")[3:])
        assert (args.controller_url, args.fleet, args.node_group) == ("http://10.60.0.10:8443", "big", f"gpustack-proj-dev-{group}")
        assert str(args.join_token_file) == "/var/lib/gpustack/join.token"
        assert {"backend=aws", f"spot={'true' if group == 'big-spot' else 'false'}"} <= set(args.label or [])
        assert args.advertise_url == "http://${GPUSTACK_ADDRESS}:8600"  # the unit's identity file fills it
    gw = graph.one("aws:ec2/instance:Instance", "gw")
    assert gw.inputs["privateIp"] == "10.60.0.10"
    gw_script = gw.inputs["userData"]
    for boot in (script, gw_script):  # both scripts are valid bash
        checked = subprocess.run(["bash", "-n"], input=boot, capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
    gateway_argv = unit_argv(gw_script, "gpustack-gateway")
    assert "--join-token-dir" in gateway_argv
    refresh = unit_argv(gw_script, "gpustack-joins")
    assert refresh[refresh.index("secrets-under") + 1] == "/gpustack/proj/dev/joins"
    # The controller sizes both groups by their names, within nodes: 1..3 (on-demand from 0), with
    # boto3 from the gateway's pinned runtime.
    assert gateway_argv[gateway_argv.index("--node-groups") + 1] == "/var/lib/gpustack/node-groups.json"
    body = gw_script.split("<<'GPUSTACK_NODE_GROUPS'\n", 1)[1].split("\nGPUSTACK_NODE_GROUPS\n", 1)[0]
    groups = {g["name"]: g for g in json.loads(body)["groups"]}
    assert json.loads(body)["kind"] == "aws" and json.loads(body)["region"] == "us-east-1"
    assert {n: (g["fleet"], g["min"], g["max"], g["labels"]["spot"]) for n, g in groups.items()} == {
        "gpustack-proj-dev-big-spot": ("big", 1, 3, "true"), "gpustack-proj-dev-big-on-demand": ("big", 0, 3, "false")}
    # The gateway's own loader accepts the file (here it stops only at the missing boto3).
    (tmp_path / "ng.json").write_text(body)
    try:
        load_sizers(tmp_path / "ng.json")
    except GpustackError as exc:
        assert "needs boto3" in str(exc)
    policy = json.loads(graph.one("aws:iam/rolePolicy:RolePolicy", "gw-gateway").inputs["policy"])
    reads = [s for s in policy["Statement"] if "ssm:GetParametersByPath" in s["Action"]]
    assert reads == [{"Effect": "Allow", "Action": ["ssm:GetParametersByPath", "ssm:GetParameter"],
                      "Resource": ["arn:aws:ssm:us-east-1:*:parameter/gpustack/proj/dev/joins",
                                   "arn:aws:ssm:us-east-1:*:parameter/gpustack/proj/dev/joins/*"]}]


def test_gateway_with_a_domain_has_a_static_ip_dns_and_tls(tmp_path: Path) -> None:
    write(tmp_path, {"g.gpustack.yml": GATEWAY})
    graph = run(tmp_path, tmp_path)
    eip = graph.one("aws:ec2/eip:Eip", "gw")
    assert eip.inputs["domain"] == "vpc"
    assert graph.one("aws:route53/zone:Zone", "gw").inputs["name"] == "llm.example.com"
    records = {r.inputs["name"]: r.inputs for r in graph.of_type("aws:route53/record:Record")}
    assert set(records) == {"llm.example.com", "*.llm.example.com"}
    assert all(r["type"] == "A" and r["records"] == ["198.18.0.10"] for r in records.values())
    user_data = graph.one("aws:ec2/instance:Instance", "gw").inputs["userData"]
    assert "--certificate lets-encrypt" in user_data and "--domain llm.example.com" in user_data
    assert "--tls-port 443" in user_data


def test_acm_certificate_ends_tls_at_a_load_balancer(tmp_path: Path) -> None:
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
    write(tmp_path, {"g.gpustack.yml": GATEWAY.replace("certificate: lets-encrypt", f"certificate: {{type: acm, arn: '{arn}'}}")})
    graph = run(tmp_path, tmp_path)
    listener = graph.one("aws:lb/listener:Listener").inputs
    assert listener["port"] == 443 and listener["protocol"] == "HTTPS" and listener["certificateArn"] == arn
    records = {r.name: r.inputs for r in graph.of_type("aws:route53/record:Record")}
    # Route 53 rejects a CNAME at the zone apex: the apex is an alias A record to the load balancer.
    assert records["gw-apex"]["type"] == "A" and "records" not in records["gw-apex"]
    assert records["gw-apex"]["aliases"] == [{"name": records["gw-wildcard"]["records"][0], "zoneId": "Z0MOCK",
                                              "evaluateTargetHealth": True}]
    assert records["gw-wildcard"]["type"] == "CNAME" and records["gw-wildcard"]["name"] == "*.llm.example.com"
    assert graph.one("aws:lb/loadBalancer:LoadBalancer").inputs.get("internal") is False
    assert "--certificate" not in graph.one("aws:ec2/instance:Instance", "gw").inputs["userData"]


def test_example_plans_under_mocks_with_an_explicit_regional_provider(tmp_path: Path) -> None:
    graph = run(EXAMPLE, tmp_path)
    provider = graph.one("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    assert {g.name for g in graph.of_type("aws:autoscaling/group:Group")} == {"aws-a10g-spot", "aws-a10g-on-demand"}


def test_credentials_are_references_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-in-the-graph")
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy="spot", gpu="A10G:1"),
                     "p.gpustack.yml": "type: project\nname: proj\nbackends:\n  - type: aws\n    profile: prod\n"
                                       "    env: [AWS_SECRET_ACCESS_KEY]\n"})
    graph = run(tmp_path, tmp_path)
    provider = graph.one("pulumi:providers:aws")
    assert provider.inputs["profile"] == "prod" and provider.inputs["region"] == "us-east-1"
    assert "never-in-the-graph" not in json.dumps([r.inputs for r in graph.resources], default=str)


def test_fleet_and_gateway_share_one_network_so_the_controller_reaches_agents(tmp_path: Path) -> None:
    write(tmp_path, {"f.gpustack.yml": FLEET.format(policy="spot", gpu="A10G:1"), "g.gpustack.yml": GATEWAY})
    graph = run(tmp_path, tmp_path)
    [vpc] = graph.of_type("aws:ec2/vpc:Vpc")
    groups = graph.of_type("aws:ec2/securityGroup:SecurityGroup")
    assert {g.inputs["vpcId"] for g in groups} == {f"{vpc.name}-id"}
    assert graph.one("gpustack:index:Network").name == "aws-us-east-1"
