"""The AWS side of the boot rehearsal: what the stack would create (bucket with the runtime,
SSM parameters, an Auto Scaling group), made in moto's server with boto3, and the boot scripts
rendered against moto and the metadata stub."""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from typing import Any

import boto3

from gpustack_iac.providers.cloudboot import BootSource, Endpoints, GatewayBoot, NodeJoin, gateway_boot, node_boot
from gpustack_iac.providers.runtime_bundle import RuntimeBundle
from gpustack_iac.providers.wheelhouse import Wheelhouse
from tests.cloud.rehearsal.harness import AGENT_PORT, GATEWAY_ARGS
from tests.cloud.rehearsal.metadata import MetadataStub

REGION = "us-east-1"
BUCKET = "gpustack-rehearsal-runtime"
PREFIX = "/gpustack/rehearsal/dev"


def client(service: str, moto: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=moto, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@dataclass
class AwsWorld:
    moto: str
    metadata: MetadataStub
    tokens: dict[str, str]  # SSM name -> value
    asg: str

    def endpoints(self) -> Endpoints:
        return Endpoints(metadata=self.metadata.url, storage=self.moto, secrets=self.moto, api=self.moto)

    def source(self, bundle: RuntimeBundle) -> BootSource:
        return BootSource(cloud="aws", region=REGION, bucket=BUCKET, bundle=bundle, endpoints=self.endpoints())

    @property
    def token(self) -> str:
        return self.tokens[f"{PREFIX}/gateway/token"]

    @property
    def admin_token(self) -> str:
        return self.tokens[f"{PREFIX}/gateway/admin-token"]


def upload(moto: str, bundle: RuntimeBundle, house: Wheelhouse, tamper: str | None = None) -> RuntimeBundle:
    """Upload as `up` does; with `tamper`, under another prefix with that wheel's bytes changed
    (the manifest, and so its pinned digest, untouched)."""
    s3 = client("s3", moto)
    target = dataclasses.replace(bundle, version=bundle.version + "-tampered") if tamper else bundle
    for obj in target.objects(house.path):
        data = obj.data if obj.path is None else obj.path.read_bytes()
        if tamper and obj.path is not None and obj.path.name.startswith(tamper):
            data = data[:-64] + bytes(64)
        s3.put_object(Bucket=BUCKET, Key=obj.key, Body=data)
    return target


def create_world(moto: str, metadata: MetadataStub) -> AwsWorld:
    client("s3", moto).create_bucket(Bucket=BUCKET)
    ssm = client("ssm", moto)
    tokens = {f"{PREFIX}/{name}": secrets.token_urlsafe(24) for name in
              ("gateway/token", "gateway/admin-token", "fleets/gpu/agent-token", "joins/gpu")}
    for name, value in tokens.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString")
    ec2 = client("ec2", moto)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName="gpu", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
    asg = "gpustack-rehearsal-dev-gpu"
    client("autoscaling", moto).create_auto_scaling_group(
        AutoScalingGroupName=asg, LaunchTemplate={"LaunchTemplateName": "gpu"}, MinSize=0, MaxSize=3,
        DesiredCapacity=1, AvailabilityZones=[f"{REGION}a"])
    return AwsWorld(moto, metadata, tokens, asg)


def desired_capacity(world: AwsWorld) -> int:
    groups = client("autoscaling", world.moto).describe_auto_scaling_groups(AutoScalingGroupNames=[world.asg])
    return int(groups["AutoScalingGroups"][0]["DesiredCapacity"])


def gateway_script(world: AwsWorld, bundle: RuntimeBundle, max_nodes: int = 3) -> str:
    groups = json.dumps({"kind": "aws", "region": REGION, "interval": 2, "groups": [
        {"name": world.asg, "fleet": "gpu", "min": 0, "max": max_nodes, "gpus": 0,
         "labels": {"backend": "aws", "region": REGION, "spot": "false"}}]})
    gw = GatewayBoot(token_secret=f"{PREFIX}/gateway/token", admin_token_secret=f"{PREFIX}/gateway/admin-token",
                     args=GATEWAY_ARGS,
                     joins_path=f"{PREFIX}/joins", node_groups=groups)
    return gateway_boot(world.source(bundle), gw)


def node_script(world: AwsWorld, bundle: RuntimeBundle, controller: str) -> str:
    join = NodeJoin(agent_token_secret=f"{PREFIX}/fleets/gpu/agent-token", join_token_secret=f"{PREFIX}/joins/gpu",
                    fleet="gpu", node_group=world.asg, controller_url=controller, agent_port=AGENT_PORT,
                    labels=(("backend", "aws"), ("region", REGION), ("spot", "false")))
    return node_boot(world.source(bundle), join)
