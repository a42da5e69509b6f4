"""The backends: one object per backend (registry.py) with its capabilities (base.py), and what this
version can deploy, without importing Pulumi: `validate` marks each document with it and `compile`
refuses the rest with a located error (both read the same objects).

Each cloud's resources live beside its object (`backends/aws/resources.py`, ...), loaded only by
`Backend.resources()` for a backend a stack uses.
"""

from __future__ import annotations

from gpustack_iac.backends.base import CAPABILITIES, Backend, CloudVmBackend, ClusterBackend, HostBackend, WithPulumiPlugin
from gpustack_iac.backends.host import Local, Ssh
from gpustack_iac.backends.registry import REGISTRY, get, implemented, plugin
from gpustack_iac.spec.models import (
    DevEnvironmentConfig,
    Document,
    FleetConfig,
    GatewayConfig,
    ServiceConfig,
    TaskConfig,
    VolumeConfig,
)

__all__ = ["CAPABILITIES", "REGISTRY", "Backend", "CloudVmBackend", "ClusterBackend", "HostBackend", "WithPulumiPlugin", "Local", "Ssh", "get", "implemented", "plugin", "fleet_backend", "backend_of_fleet", "fleet_host_backend",
           "not_deployable", "IMPLEMENTED_BACKENDS", "WORKLOAD_BACKENDS", "HOST_VOLUME_BACKENDS"]

# Backends with components in stacks/. Others validate, and plan refuses them with their name.
IMPLEMENTED_BACKENDS = tuple(b.name for b in implemented())
# Tasks run on fleet hosts through their agents (docs/workloads.md); dev environments are reached
# through the fleet's SSH on SSH fleets; volumes are a directory on one fleet host.
WORKLOAD_BACKENDS = tuple(b.name for b in implemented() if b.runs_workloads)
DEV_ENVIRONMENT_BACKENDS = WORKLOAD_BACKENDS


def workload_backends(doc: Document) -> tuple[str, ...]:
    return DEV_ENVIRONMENT_BACKENDS if isinstance(doc, DevEnvironmentConfig) else WORKLOAD_BACKENDS
HOST_VOLUME_BACKENDS = WORKLOAD_BACKENDS


def fleet_backend(fleet: FleetConfig) -> str:
    if fleet.is_ssh:
        return "ssh"
    return ",".join(fleet.backends) if fleet.backends else "<any>"


def backend_of_fleet(fleet: FleetConfig) -> Backend:
    """The fleet's backend object (a fleet naming several backends gets one that deploys nothing)."""
    return get(fleet_backend(fleet))


def fleet_host_backend(fleet: FleetConfig) -> Backend:
    """The backend a fleet's hosts run on: ssh for an SSH fleet, else its first backend, else local
    (what components and cost use once plan has refused fleets naming several backends)."""
    return get("ssh" if fleet.is_ssh else (fleet.backends or ["local"])[0])


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
