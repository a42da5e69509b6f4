"""Cloud and Kubernetes placements of fleets and gateways: picks the backend module in providers/.

Provider SDKs are imported only here and only for the backend a stack uses, so the local backend
(and `validate`) never load them, and a missing SDK is one line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pulumi

from gpustack_iac.errors import GpustackError
from gpustack_iac.spec.models import ProjectConfig

SDK = {"aws": "pulumi_aws", "gcp": "pulumi_gcp", "azure": "pulumi_azure_native", "kubernetes": "pulumi_kubernetes"}


def backend_module(backend: str) -> ModuleType:
    """providers/<backend>.py, or a one-line error naming the extra that brings its SDK."""
    try:
        importlib.import_module(SDK[backend])
    except ImportError:
        raise GpustackError(f"the {backend} backend needs {SDK[backend].replace('_', '-')}: "
                            f"pip install 'gpustack-iac[{backend}]'") from None
    return importlib.import_module(f"gpustack_iac.providers.{backend}")


def credentials(project: ProjectConfig | None, backend: str) -> dict[str, Any]:
    """The project's credential references for a backend (profile, kubeconfig, context): names only."""
    for creds in (project.backends if project else []):
        if creds.type == backend:
            return creds.model_dump(exclude_none=True, exclude={"type", "env"})
    return {}


def explicit_provider(backend: str, region: str | None, project: ProjectConfig | None,
                      parent: pulumi.Resource | None = None) -> pulumi.ProviderResource | None:
    """A provider instance carrying the region and the credential references (never values)."""
    refs = credentials(project, backend)
    opts = pulumi.ResourceOptions(parent=parent)
    if backend == "aws":
        import pulumi_aws as aws
        return aws.Provider(f"aws-{region}", region=region, profile=refs.get("profile"), opts=opts)
    if backend == "gcp":
        import pulumi_gcp as gcp
        # A path to the credentials file (the provider reads it), never its content.
        return gcp.Provider(f"gcp-{region}", region=region, credentials=refs.get("credentials_file"), opts=opts)
    if backend == "azure":
        import pulumi_azure_native as az
        return az.Provider(f"azure-{region}", location=region, opts=opts)
    if backend == "kubernetes":
        import pulumi_kubernetes as k8s
        if refs.get("kubeconfig") or refs.get("context"):
            return k8s.Provider("kubernetes", kubeconfig=refs.get("kubeconfig"), context=refs.get("context"), opts=opts)
        return None
    return None


class CloudNetwork(pulumi.ComponentResource):
    """One network per (cloud, region) in a stack, shared by its fleets and gateway: the controller
    on the gateway reaches the agents on their private addresses, and the agent port stays closed to
    everything outside the network."""

    def __init__(self, backend: str, region: str, opts: pulumi.ResourceOptions | None = None) -> None:
        name = f"{backend}-{region}"
        super().__init__("gpustack:index:Network", name, {"backend": backend, "region": region}, opts)
        self.handle = backend_module(backend).network(f"gpustack-{region}", region, self)
        self.register_outputs({})
