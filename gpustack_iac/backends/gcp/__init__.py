"""GCP: regional managed instance groups for node groups, one Compute Engine gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from gpustack_iac.backends.base import CloudVmBackend

if TYPE_CHECKING:
    import pulumi


class Gcp(CloudVmBackend):
    name = "gcp"
    sdk = "pulumi_gcp"
    gateway_type: ClassVar[tuple[str, float]] = ("e2-medium", 0.0335)
    zonal_offers = True  # GCP offers are per zone; a managed instance group is regional
    sizes_node_groups = True  # the controller resizes the regional MIGs (a custom role on exactly those)

    def gateway_sizing(self, node_groups: list[Any], joins: dict[str, Any], made: list[Any]) -> dict[str, Any]:
        # The gateway is granted the fleets' join secrets, and resize on its region's MIGs.
        return {"joins": joins, "node_groups": node_groups}

    def provider(self, region: str | None, refs: dict[str, Any],
                 parent: pulumi.Resource | None = None) -> pulumi.ProviderResource | None:
        import pulumi
        import pulumi_gcp as gcp

        # A path to the credentials file (the provider reads it), never its content.
        return gcp.Provider(f"gcp-{region}", region=region, credentials=refs.get("credentials_file"),
                            opts=pulumi.ResourceOptions(parent=parent))
