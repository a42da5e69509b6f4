"""Size AWS Auto Scaling groups (a fleet's node groups) with boto3.

boto3 is optional (the `aws-runtime` extra, installed on the gateway instance): importing this
module works without it, and `AsgScaler.from_region` says what to install. The gateway's
instance role may call exactly SetDesiredCapacity, TerminateInstanceInAutoScalingGroup and the
Describe calls on this stack's groups (backends/aws/resources.py). boto3 is synchronous, so calls run in a thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from gpustack_iac.errors import GpustackError

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # the SDK is only needed where the controller really scales AWS groups
    boto3 = None

    class BotoCoreError(Exception):  # type: ignore[no-redef]
        """Stands for botocore's errors where botocore is absent (nothing raises it)."""

    ClientError = BotoCoreError


class AsgScaler:
    """A `NodeGroupScaler` over Auto Scaling groups; `client` is a boto3 `autoscaling` client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        # Launch failures older than this scaler were another controller's (or a previous run's).
        self._since = dt.datetime.now(dt.timezone.utc)
        self._seen: set[str] = set()

    @classmethod
    def from_region(cls, region: str) -> "AsgScaler":
        if boto3 is None:
            raise GpustackError("scaling AWS node groups needs boto3: pip install 'gpustack-iac[aws-runtime]'")
        # Credentials come from the instance role, never from configuration.
        return cls(boto3.client("autoscaling", region_name=region))

    async def get_size(self, name: str) -> int:
        def call() -> int:
            answer = self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
            groups = answer.get("AutoScalingGroups", [])
            if not groups:
                raise GpustackError(f"aws: auto scaling group {name} does not exist")
            return int(groups[0]["DesiredCapacity"])

        return await self._call(call, f"read the size of auto scaling group {name}")

    async def set_size(self, name: str, size: int) -> int:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")

        def call() -> int:
            # HonorCooldown off: the controller's own hysteresis decides when to ask.
            self._client.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=size, HonorCooldown=False)
            return size

        return await self._call(call, f"set auto scaling group {name} to {size}")

    async def remove_node(self, name: str, instance: str) -> int:
        def call() -> int:
            # The instance must belong to this group: the call itself takes only an instance id,
            # and it would lower whichever group the instance is in.
            found = self._client.describe_auto_scaling_instances(InstanceIds=[instance]).get("AutoScalingInstances", [])
            if not found or found[0]["AutoScalingGroupName"] != name:
                raise GpustackError(f"aws: instance {instance} is not in auto scaling group {name}")
            # Decrementing with the termination: the group's size drops by one and the cloud does
            # not replace the node, nor pick another (maybe busy) one to terminate.
            self._client.terminate_instance_in_auto_scaling_group(InstanceId=instance, ShouldDecrementDesiredCapacity=True)
            groups = self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
            return int(groups[0]["DesiredCapacity"])

        return await self._call(call, f"terminate instance {instance} of auto scaling group {name}")

    async def launch_errors(self, name: str) -> list[str]:
        def call() -> list[str]:
            answer = self._client.describe_scaling_activities(AutoScalingGroupName=name, MaxRecords=20)
            out = []
            for a in answer.get("Activities", []):
                if a.get("StatusCode") not in ("Failed", "Cancelled") or a["ActivityId"] in self._seen:
                    continue
                self._seen.add(a["ActivityId"])
                if a["StartTime"] >= self._since:
                    out.append(f"{a.get('StatusMessage', '')} {a.get('Description', '')}".strip())
            return out

        try:
            return await asyncio.to_thread(call)
        except (BotoCoreError, ClientError) as exc:
            raise GpustackError(f"aws: cannot read the scaling activities of auto scaling group {name}: {exc}") from None

    async def close(self) -> None:
        """Nothing to release: boto3's client holds no connection the process must close."""

    @staticmethod
    async def _call(fn: Any, what: str) -> int:
        try:
            return int(await asyncio.to_thread(fn))
        except (BotoCoreError, ClientError) as exc:
            raise GpustackError(f"aws: cannot {what}: {exc}") from None
