"""What a backend is: its name, what it can do (capabilities) and where its resources come from.

Modelled on dstack's `Compute` classes: one base and a few mix-ins, each granting one kind of
capability, so a backend's class line says what it can do (`class Aws(CloudVmBackend)`), and
callers ask a capability (`backend.sizes_node_groups`) instead of comparing names. Nothing here
imports Pulumi or a provider SDK: `validate` and `plan`'s checks read the capabilities; only
`resources()` and `provider()` load the SDK, and only for a backend a stack uses.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from gpustack_iac.errors import GpustackError

if TYPE_CHECKING:
    import pulumi

Kind = Literal["host", "cloud-vm", "cluster", "not-implemented"]


class Backend:
    """A backend this version knows. The defaults describe a backend that deploys nothing."""

    name: str
    kind: ClassVar[Kind] = "not-implemented"
    implemented: ClassVar[bool] = False
    # Capacity and placement.
    regionless: ClassVar[bool] = False  # has no regions (local, ssh, kubernetes)
    supports_spot: ClassVar[bool] = False  # spot_policy spot/auto is honoured
    sizes_node_groups: ClassVar[bool] = False  # the controller grows and shrinks its node groups
    removes_idle_nodes: ClassVar[bool] = False  # a fleet's `idle_duration`: idle nodes drained and terminated
    hosts_known_at_plan: ClassVar[bool] = False  # plan knows every host's facts (placement check)
    private_gateway: ClassVar[bool] = False  # `public_ip: false` honoured: no public address, internal load balancer
    cluster_placement: ClassVar[bool] = False  # a fleet's `placement: cluster` honoured (one interconnected network)
    reservations: ClassVar[bool] = False  # a fleet's `reservation` (a capacity reservation) honoured
    # What a replica can be.
    runs_processes: ClassVar[bool] = False  # a replica without `image` runs as processes on a host
    supports_image: ClassVar[bool] = False  # a replica with `image` runs as a container
    runs_workloads: ClassVar[bool] = False  # tasks, dev environments and host volumes
    # Money and engines.
    free: ClassVar[bool] = False  # capacity costs $0 here (your own machines)
    priced: ClassVar[bool] = False  # capacity priced from the GPU catalog
    needs_pulumi_cli: ClassVar[bool] = False  # its resources need a Pulumi provider plugin for `up`
    # Placement properties accepted and reported as ignored (never silently).
    ignored_placement: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).name  # the implemented backends name themselves (class attribute)

    def __repr__(self) -> str:
        return f"<backend {self.name}>"

    def __str__(self) -> str:
        return self.name

    def capabilities(self) -> dict[str, bool]:
        """Every capability flag by name (what docs/cloud.md's table and the property matrix read)."""
        return {k: bool(getattr(self, k)) for k in CAPABILITIES}


CAPABILITIES = ("implemented", "regionless", "supports_spot", "sizes_node_groups", "removes_idle_nodes", "hosts_known_at_plan", "private_gateway",
                "cluster_placement", "reservations",
                "runs_processes", "supports_image", "runs_workloads", "free", "priced", "needs_pulumi_cli")


class HostBackend(Backend):
    """Agents on machines you already have: this one (local) or SSH hosts. Costs $0; plan measures
    or probes every host, so placement is checked before anything starts."""

    kind: ClassVar[Kind] = "host"
    implemented = True
    regionless = True
    hosts_known_at_plan = True
    runs_processes = True
    supports_image = True  # where a Docker/Podman daemon answers (checked per host)
    runs_workloads = True
    free = True
    private_gateway = True  # the gateway binds loopback (or the host's) unless told otherwise


class WithPulumiPlugin(Backend):
    """Resources declared through an official Pulumi provider SDK (an extra), applied by the CLI."""

    needs_pulumi_cli = True
    sdk: ClassVar[str] = ""  # the SDK's import name, e.g. pulumi_aws
    extra: ClassVar[str] = ""  # the pip extra that installs it

    def resources(self) -> ModuleType:
        """backends/<name>/resources.py, or a one-line error naming the extra that brings its SDK."""
        try:
            importlib.import_module(self.sdk)
        except ImportError:
            raise GpustackError(f"the {self.name} backend needs {self.sdk.replace('_', '-')}: "
                                f"pip install 'gpustack-iac[{self.extra or self.name}]'") from None
        return importlib.import_module(f"gpustack_iac.backends.{self.name}.resources")

    def provider(self, region: str | None, refs: dict[str, Any],
                 parent: pulumi.Resource | None = None) -> pulumi.ProviderResource | None:
        """An explicit provider carrying the region and credential references (never values);
        None where the SDK's default provider is right."""
        return None


class CloudVmBackend(WithPulumiPlugin):
    """Virtual machines in node groups placed from the GPU catalog, and a gateway VM."""

    kind: ClassVar[Kind] = "cloud-vm"
    implemented = True
    supports_spot = True
    runs_processes = True
    supports_image = True
    priced = True
    gateway_type: ClassVar[tuple[str, float]] = ("", 0.0)  # small general-purpose type and its $/h list price
    zonal_offers: ClassVar[bool] = False  # catalog offers name zones, node groups are regional (GCP)

    def region_of_offer(self, region: str) -> str:
        return region.rsplit("-", 1)[0] if self.zonal_offers else region

    def gateway_sizing(self, node_groups: list[Any], joins: dict[str, Any], made: list[Any]) -> dict[str, Any]:
        """The keyword arguments resources().gateway takes to size this backend's node groups (`made`:
        their cloud resources, in the stack's fleets of this backend)."""
        return {}


class ClusterBackend(WithPulumiPlugin):
    """A Kubernetes cluster: replicas are containers in Deployments; capacity is the cluster's."""

    kind: ClassVar[Kind] = "cluster"
    implemented = True
    regionless = True
    supports_image = True
    sizes_node_groups = True  # the controller sets each group's Deployment replicas


class NotImplementedBackend(Backend):
    """A dstack backend this version validates but cannot deploy: plan refuses it by name."""
