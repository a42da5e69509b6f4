"""Size AWS Auto Scaling groups (a fleet's node groups) with boto3.

boto3 is optional (the `aws-runtime` extra, installed on the gateway instance): importing this
module works without it, and `AsgScaler.from_region` says what to install. The gateway's
instance role may call exactly SetDesiredCapacity and DescribeAutoScalingGroups on this stack's
groups (backends/aws/resources.py). boto3 is synchronous, so calls run in a thread.
"""

from __future__ import annotations

import asyncio
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

    @staticmethod
    async def _call(fn: Any, what: str) -> int:
        try:
            return int(await asyncio.to_thread(fn))
        except (BotoCoreError, ClientError) as exc:
            raise GpustackError(f"aws: cannot {what}: {exc}") from None
