"""Cloud and Kubernetes placements of fleets and gateways: what they share across backends.

Provider SDKs are loaded only through the backend objects (`backends/`), and only for a backend a
stack uses, so the local backend (and `validate`) never load them, and a missing SDK is one line
naming the extra to install.
"""

from __future__ import annotations

from typing import Any

import pulumi

from gpustack_iac.backends import plugin
from gpustack_iac.spec.models import ProjectConfig


def credentials(project: ProjectConfig | None, backend: str) -> dict[str, Any]:
    """The project's credential references for a backend (profile, kubeconfig, context): names only."""
    for creds in (project.backends if project else []):
        if creds.type == backend:
            return creds.model_dump(exclude_none=True, exclude={"type", "env"})
    return {}


def explicit_provider(backend: str, region: str | None, project: ProjectConfig | None,
                      parent: pulumi.Resource | None = None) -> pulumi.ProviderResource | None:
    """A provider instance carrying the region and the credential references (never values)."""
    return plugin(backend).provider(region, credentials(project, backend), parent)


class CloudNetwork(pulumi.ComponentResource):
    """One network per (cloud, region) in a stack, shared by its fleets and gateway: the controller
    on the gateway reaches the agents on their private addresses, and the agent port stays closed to
    everything outside the network."""

    def __init__(self, backend: str, region: str, opts: pulumi.ResourceOptions | None = None) -> None:
        name = f"{backend}-{region}"
        super().__init__("gpustack:index:Network", name, {"backend": backend, "region": region}, opts)
        self.handle = plugin(backend).resources().network(f"gpustack-{region}", region, self)
        self.register_outputs({})
