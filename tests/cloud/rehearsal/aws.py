"""The AWS side of the boot rehearsal: what the stack creates (the runtime in its bucket, the SSM
parameters, an Auto Scaling group) made in moto's server with boto3, and the boot scripts the AWS
backend renders (backends/aws/boot.py) pointed at moto and the metadata stub."""

from __future__ import annotations

import secrets
from typing import Any

import boto3

from gpustack_iac.backends.aws import boot
from gpustack_iac.providers.cloudboot import Endpoints
from gpustack_iac.providers.runtime_bundle import CloudRuntime
from tests.cloud.rehearsal.harness import PROJECT, STACK, World, gateway_instance, node_group, tampered
from tests.cloud.rehearsal.metadata import MetadataStub

REGION = "us-east-1"
BUCKET = "gpustack-rehearsal-runtime"


def client(service: str, moto: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=moto, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


class AwsWorld(World):
    cloud = "aws"
    sizes_groups = True

    def __init__(self, moto: str, metadata: MetadataStub) -> None:
        self.moto, self.metadata = moto, metadata
        self.endpoints = Endpoints(metadata=metadata.url, storage=moto, secrets=moto, api=moto)
        self.group = node_group("gpu", REGION)
        client("s3", moto).create_bucket(Bucket=BUCKET)
        gw = boot.gateway_path(PROJECT, STACK, "gw")
        names = {"token": f"{gw}/token", "admin": f"{gw}/admin-token", "join": f"{boot.joins_path(PROJECT, STACK)}/gpu",
                 "agent": boot.agent_token_path(PROJECT, STACK, "gpu")}
        self.tokens = {k: secrets.token_urlsafe(24) for k in names}
        for key, name in names.items():
            client("ssm", moto).put_parameter(Name=name, Value=self.tokens[key], Type="SecureString")
        ec2 = client("ec2", moto)
        image = ec2.describe_images()["Images"][0]["ImageId"]
        ec2.create_launch_template(LaunchTemplateName="gpu", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
        self.asg = boot.asg_name(PROJECT, STACK, self.group)
        client("autoscaling", moto).create_auto_scaling_group(
            AutoScalingGroupName=self.asg, LaunchTemplate={"LaunchTemplateName": "gpu"}, MinSize=0, MaxSize=3,
            DesiredCapacity=1, AvailabilityZones=[f"{REGION}a"])

    def upload(self, runtime: CloudRuntime, tamper: str | None = None) -> CloudRuntime:
        target = tampered(runtime, tamper)
        s3 = client("s3", self.moto)
        for key, data in self.objects(target, tamper):
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        return target

    def gateway_script(self, runtime: CloudRuntime) -> str:
        group = node_group("gpu", REGION, runtime)
        return boot.gateway_script(PROJECT, STACK, gateway_instance(REGION, runtime), BUCKET, [group], self.endpoints)

    def node_script(self, runtime: CloudRuntime, controller: str) -> str:
        return boot.node_script(PROJECT, STACK, node_group("gpu", REGION, runtime), BUCKET, self.endpoints, controller)

    def refused_identity(self) -> int:
        return self.metadata.identity.refused

    def group_size(self) -> int:
        groups = client("autoscaling", self.moto).describe_auto_scaling_groups(AutoScalingGroupNames=[self.asg])
        return int(groups["AutoScalingGroups"][0]["DesiredCapacity"])

    def set_group_size(self, n: int) -> None:
        client("autoscaling", self.moto).set_desired_capacity(AutoScalingGroupName=self.asg, DesiredCapacity=n)
