"""AWS: EC2 Auto Scaling groups for node groups, one EC2 gateway (resources in resources.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from gpustack_iac.backends.base import CloudVmBackend

if TYPE_CHECKING:
    import pulumi


class Aws(CloudVmBackend):
    name = "aws"
    sdk = "pulumi_aws"
    gateway_type: ClassVar[tuple[str, float]] = ("t3.medium", 0.0416)
    sizes_node_groups = True  # the controller sets the Auto Scaling groups' desired capacity
    removes_idle_nodes = True  # ... and terminates a drained idle instance, decrementing it
    private_gateway = True  # no Elastic IP, the gateway behind NAT, an internal load balancer for acm
    cluster_placement = True  # a cluster placement group in one zone, EFA where the instance type has it
    reservations = True  # an On-Demand Capacity Reservation (cr-…) or a reservation resource group (ARN)

    def gateway_sizing(self, node_groups: list[Any], joins: dict[str, Any], made: list[Any]) -> dict[str, Any]:
        return {"node_groups": node_groups}

    def provider(self, region: str | None, refs: dict[str, Any],
                 parent: pulumi.Resource | None = None) -> pulumi.ProviderResource | None:
        import pulumi
        import pulumi_aws as aws

        return aws.Provider(f"aws-{region}", region=region, profile=refs.get("profile"),
                            opts=pulumi.ResourceOptions(parent=parent))
