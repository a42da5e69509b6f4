"""Azure: virtual machine scale sets for node groups, one VM gateway, a Key Vault for the join secret."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from gpustack_iac.backends.base import CloudVmBackend

if TYPE_CHECKING:
    import pulumi


class Azure(CloudVmBackend):
    name = "azure"
    sdk = "pulumi_azure_native"
    gateway_type: ClassVar[tuple[str, float]] = ("Standard_B2s", 0.0416)
    sizes_node_groups = True  # the controller sets the scale sets' capacity (a role on exactly those)

    def gateway_sizing(self, node_groups: list[Any], joins: dict[str, Any], made: list[Any]) -> dict[str, Any]:
        # The gateway is granted the fleets' join secrets, and its region's scale sets (by resource).
        return {"joins": joins, "node_groups": node_groups, "scale_sets": made}

    def provider(self, region: str | None, refs: dict[str, Any],
                 parent: pulumi.Resource | None = None) -> pulumi.ProviderResource | None:
        import pulumi
        import pulumi_azure_native as az

        return az.Provider(f"azure-{region}", location=region, opts=pulumi.ResourceOptions(parent=parent))
