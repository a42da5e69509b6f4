"""What this version can deploy, without importing Pulumi: `validate` marks each document with
it and `compile` refuses the rest with a located error (both read the same list)."""

from __future__ import annotations

from gpustack_iac.spec.models import (
    DevEnvironmentConfig,
    Document,
    FleetConfig,
    GatewayConfig,
    ServiceConfig,
    TaskConfig,
    VolumeConfig,
)

# Backends with components in stacks/. Others validate, and plan refuses them with their name.
IMPLEMENTED_BACKENDS = ("local", "ssh", "aws", "gcp", "azure", "kubernetes")
# Tasks run on fleet hosts through their agents (docs/workloads.md).
WORKLOAD_BACKENDS = ("local", "ssh")
# Dev environments: reached through the fleet's SSH on SSH fleets.
DEV_ENVIRONMENT_BACKENDS = ("local", "ssh")


def workload_backends(doc: Document) -> tuple[str, ...]:
    return DEV_ENVIRONMENT_BACKENDS if isinstance(doc, DevEnvironmentConfig) else WORKLOAD_BACKENDS
# Volumes that are a directory on one fleet host.
HOST_VOLUME_BACKENDS = ("local", "ssh")


def fleet_backend(fleet: FleetConfig) -> str:
    if fleet.is_ssh:
        return "ssh"
    return ",".join(fleet.backends) if fleet.backends else "<any>"


def not_deployable(doc: Document) -> str | None:
    """Why `plan` would refuse the document with this version, or None when it deploys."""
    implemented = ", ".join(IMPLEMENTED_BACKENDS)
    if isinstance(doc, FleetConfig) and fleet_backend(doc) not in IMPLEMENTED_BACKENDS:
        return f"backend {fleet_backend(doc)} is not implemented yet (implemented: {implemented})"
    if isinstance(doc, GatewayConfig) and doc.backend not in IMPLEMENTED_BACKENDS:
        return f"backend {doc.backend} is not implemented yet (implemented: {implemented})"
    if isinstance(doc, (TaskConfig, DevEnvironmentConfig)) and doc.backends and not set(doc.backends) & set(workload_backends(doc)):
        return (f"backends {', '.join(doc.backends)} are not implemented yet for a {doc.KIND} "
                f"(implemented: {', '.join(workload_backends(doc))})")
    if isinstance(doc, VolumeConfig) and doc.backend not in HOST_VOLUME_BACKENDS:
        return f"backend {doc.backend} is not implemented yet for volumes (implemented: {', '.join(HOST_VOLUME_BACKENDS)})"
    if isinstance(doc, ServiceConfig):
        for group in doc.groups:
            if group.backends and not set(group.backends) & set(IMPLEMENTED_BACKENDS):
                return f"group {group.name}: backends {', '.join(group.backends)} are not implemented yet (implemented: {implemented})"
        if doc.gateway is False:
            return "the local backend serves services through a gateway (gateway: false)"
    return None
