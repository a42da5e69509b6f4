"""What the cloud backends share: the plain inputs of a node group and a gateway, and the boot script.

The components in stacks/ decide (from the configuration and the catalog) and hand these plain
values to backends/{aws,gcp,azure}/resources.py, which declare the cloud's own resources with the
official Pulumi provider SDKs. Nothing here imports a provider SDK.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable

import pulumi

from gpustack_iac.providers.runtime_bundle import CloudRuntime, RuntimeObject

AGENT_PORT = 8600  # the agent on a cloud node; reachable only from inside the fleet's network
CONTROL_PORT = 8443  # the gateway's control API; reachable only from the admin ranges
GATEWAY_PORTS = (80, 443)  # the gateway's data plane, public
VPC_CIDR = "10.60.0.0/16"
# The gateway takes a fixed address in the shared network's first subnet, so a node's user data
# can name the controller before anything exists (docs/cloud.md#joining).
GATEWAY_PRIVATE_IP = "10.60.0.10"
CONTROLLER_URL = f"http://{GATEWAY_PRIVATE_IP}:{CONTROL_PORT}"


@dataclass(frozen=True)
class NodeGroup:
    """One scaling group: a fleet's nodes of the same spot policy over a list of instance types."""

    name: str  # unique in the stack: "<fleet>" or "<fleet>-spot" / "<fleet>-on-demand"
    fleet: str
    region: str
    instance_types: tuple[str, ...]  # cheapest first; the first is the template's default
    spot: bool
    min_size: int
    max_size: int
    disk_gb: int
    gpu_vendor: str | None
    gpu_count: int  # per node; 0 for CPU-only
    accelerator: str | None = None  # GCP's accelerator type where the machine type does not bundle one
    max_price: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    zones: tuple[str, ...] = ()  # zonal clouds (GCP): the region's zones offering the group's types
    cluster: bool = False  # `placement: cluster`: one placement group, one zone
    reservation: str | None = None  # a capacity reservation the nodes launch into
    idle_duration: int | None = None  # seconds a node above min may stay without replicas; None: kept
    arch: str = "x86_64"  # the nodes' machine (the catalog's cpu_arch): their image and runtime
    runtime: CloudRuntime | None = None  # the pinned runtime the nodes install (compile's facts build it)


@dataclass(frozen=True)
class GatewayInstance:
    name: str
    region: str
    instance_type: str
    domain: str | None
    certificate: str | None  # "lets-encrypt", "acm", or None (plain HTTP)
    acm_arn: str | None = None
    acme_directory: str | None = None
    public_ip: bool = True  # False: no public address; an internal load balancer where one is used
    zone: str | None = None  # zonal clouds (GCP): one of the region's real zones
    arch: str = "x86_64"  # the gateway types are x86 (t3, e2, B-series)
    runtime: CloudRuntime | None = None  # the gateway's pinned runtime (with its cloud SDK where it sizes groups)


@dataclass(frozen=True)
class Network:
    admin_cidrs: tuple[str, ...]  # SSH and the control API; empty closes both


def new_token() -> pulumi.Output[str]:
    """A fresh token as a secret. Callers keep the stored one with ignore_changes on the value, so
    the secret store (not this run) owns it: it is generated once and rotated by replacing the entry."""
    return pulumi.Output.secret(secrets.token_urlsafe(32))


@dataclass
class CloudGateway:
    """What each backend's gateway hands the stack: where clients and the control API reach it, and its tokens."""

    url: pulumi.Output[str]
    control_url: pulumi.Output[str]
    token: pulumi.Output[str]
    admin_token: pulumi.Output[str]




def require_runtime(runtime: CloudRuntime | None, what: str) -> CloudRuntime:
    """The runtime compile's facts attached; a node or gateway never boots without one."""
    if runtime is None:
        raise ValueError(f"{what} has no pinned runtime (compile attaches one to every cloud node group and gateway)")
    return runtime


def upload_once(done: dict[str, pulumi.Resource], runtime: CloudRuntime,
                declare: Callable[[str, RuntimeObject], pulumi.Resource]) -> list[pulumi.Resource]:
    """Each runtime object declared once per stack store, however many groups install it. Keys are
    content-addressed (the wheelhouse key names the version and sources): a second `up` of the
    same version changes no object, so nothing is uploaded again."""
    for obj in runtime.objects():
        if obj.key not in done:
            done[obj.key] = declare(obj.key.replace("/", "-"), obj)
    return [done[o.key] for o in runtime.objects()]


def gateway_args(gateway: GatewayInstance) -> tuple[str, ...]:
    """The gateway's listening and TLS options (the boot script adds tokens, state and joins)."""
    acme = gateway.certificate == "lets-encrypt" and bool(gateway.domain)
    # With ACME, port 80 answers HTTP-01 challenges; plain HTTP then stays on 8080, which the
    # firewall does not open, and clients use 443.
    args = ["--host", "0.0.0.0", "--port", "8080" if acme else "80", "--control-port", str(CONTROL_PORT)]
    if gateway.domain:
        args += ["--domain", gateway.domain]
    if acme:
        args += ["--tls-port", "443", "--certificate", "lets-encrypt", "--cert-dir", "/var/lib/gpustack/tls"]
        if gateway.acme_directory:
            args += ["--acme-directory", gateway.acme_directory]
    return tuple(args)
