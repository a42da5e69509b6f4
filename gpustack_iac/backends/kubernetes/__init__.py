"""Kubernetes: the gateway and each replica group as Deployments in one namespace of a cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpustack_iac.backends.base import ClusterBackend

if TYPE_CHECKING:
    import pulumi


class Kubernetes(ClusterBackend):
    name = "kubernetes"
    sdk = "pulumi_kubernetes"

    def provider(self, region: str | None, refs: dict[str, Any],
                 parent: pulumi.Resource | None = None) -> pulumi.ProviderResource | None:
        if not (refs.get("kubeconfig") or refs.get("context")):
            return None  # the SDK's default provider: the current kubeconfig context
        import pulumi
        import pulumi_kubernetes as k8s

        return k8s.Provider("kubernetes", kubeconfig=refs.get("kubeconfig"), context=refs.get("context"),
                            opts=pulumi.ResourceOptions(parent=parent))
