"""Where a fleet's nodes and a gateway go on a cloud: instance types from the catalog, the spot
split, one node group per (instance types, spot policy), and the hourly price of each.

Decided at compile time, before any engine runs, so a group left without an offer is a plan error
that names it, and the same figures feed the plan's cost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gpustack_iac.catalog.match import Offer, find_offers
from gpustack_iac.catalog.snapshot import gcp_zones
from gpustack_iac.backends import CloudVmBackend, get
from gpustack_iac.backends.cloud import GatewayInstance, NodeGroup
from gpustack_iac.spec.models import FleetConfig, GatewayConfig
from gpustack_iac.spec.resources import ResourcesSpec

MAX_TYPES = 4  # instance types per scaling group: enough for spot capacity, few enough to review


def vm_backend(name: str) -> CloudVmBackend | None:
    """The backend called `name` when its fleets are node groups placed from the catalog."""
    backend = get(name)
    return backend if isinstance(backend, CloudVmBackend) else None


# Weights of a model named "...-70B-..." at 16 bits (2 bytes a parameter) plus room for the image,
# the OS and the runtime; a quantised model fits with margin.
_PARAMS = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)[bB](?![A-Za-z0-9])")
_BASE_DISK_GB = 60


def model_disk_gb(model_name: str) -> int | None:
    """The boot disk a node needs to hold the named model, from its size in the name ("70B"); None
    when the name says no size."""
    sizes = [float(m) for m in _PARAMS.findall(model_name.replace("_", "-"))]
    if not sizes:
        return None
    return _BASE_DISK_GB + math.ceil(max(sizes) * 2 * 1.1)


class NoOffer(Exception):
    """No catalog offer fits; the message names what was asked for."""


@dataclass(frozen=True)
class PricedGroup:
    group: NodeGroup
    price: float  # $/h of one node: the cheapest offer of the group's types


def _region(backend: str, offers: list[Offer]) -> str:
    vm = vm_backend(backend)
    return vm.region_of_offer(offers[0].region) if vm is not None else offers[0].region


def fleet_groups(fleet: FleetConfig, backend: str) -> list[PricedGroup]:
    """Node groups of a cloud fleet, cheapest offer's region first."""
    assert fleet.nodes is not None
    policy = fleet.spot_policy or "on-demand"
    spots = {"spot": [True], "on-demand": [False], "auto": [True, False]}[policy]
    resources = fleet.resources or ResourcesSpec()
    out = []
    region: str | None = None
    for spot in spots:
        offers = find_offers(resources, backends=[backend], regions=[region] if region else fleet.regions,
                             instance_types=fleet.instance_types, spot_policy="spot" if spot else "on-demand",
                             max_price=fleet.max_price)
        if not offers:
            where = f" in {', '.join(fleet.regions)}" if fleet.regions and not region else (f" in {region}" if region else "")
            raise NoOffer(f"no {backend} {'spot' if spot else 'on-demand'} instance type{where} fits "
                          f"{resources.describe()}" + (f" under ${fleet.max_price}/h" if fleet.max_price else ""))
        region = region or _region(backend, offers)
        types: list[str] = []
        for o in offers:
            if o.instance_type not in types and len(types) < MAX_TYPES:
                types.append(o.instance_type)
        gpu = resources.gpu
        vm = vm_backend(backend)
        # Zonal offers (GCP): the group spans only the region's zones that offer its types (and so its GPU).
        zones = tuple(sorted({o.region for o in offers if o.instance_type in types and vm is not None and vm.zonal_offers
                              and vm.region_of_offer(o.region) == region}))
        name = str(fleet.name) if len(spots) == 1 else f"{fleet.name}-{'spot' if spot else 'on-demand'}"
        disk_gb = (resources.disk.size.min.bytes // 1024**3) if resources.disk.size.min else 100
        group = NodeGroup(
            name=name, fleet=str(fleet.name), region=region, instance_types=tuple(types), spot=spot,
            min_size=fleet.nodes.min or 0, max_size=fleet.nodes.max if fleet.nodes.max is not None else max(fleet.nodes.min or 0, 1),
            disk_gb=max(disk_gb, 50), gpu_vendor=(gpu.vendor or "nvidia") if gpu and not gpu.none else None,
            gpu_count=offers[0].gpu_count, max_price=fleet.max_price, zones=zones,
            cluster=fleet.placement == "cluster", reservation=fleet.reservation, idle_duration=fleet.idle_duration,
            labels={"gpustack-fleet": str(fleet.name), "gpustack-spot": str(spot).lower()})
        out.append(PricedGroup(group=group, price=offers[0].price))
    if policy == "auto":
        # Spot first; on-demand takes over only when spot capacity is short, so its minimum is 0.
        spot_group, od = out
        out[1] = PricedGroup(group=NodeGroup(**{**od.group.__dict__, "min_size": 0}), price=od.price)
    return out


def gateway_instance(config: GatewayConfig, acme_directory: str | None = None) -> tuple[GatewayInstance, float]:
    vm = vm_backend(config.backend)
    assert vm is not None, f"gateway {config.name}: backend {config.backend} has no gateway VM"
    default_type, price = vm.gateway_type
    zone = None
    if vm.zonal_offers:
        zones = gcp_zones().get(str(config.region))
        if not zones:
            raise NoOffer(f"gateway {config.name}: {config.backend} region {config.region} is not a region this version "
                          f"knows the zones of (known: {', '.join(sorted(gcp_zones()))})")
        zone = zones[0]
    cert = config.certificate
    return GatewayInstance(
        name=str(config.name), region=str(config.region), instance_type=config.instance_type or default_type,
        domain=config.domain, certificate=cert.type if cert is not None else None,
        acm_arn=getattr(cert, "arn", None), acme_directory=acme_directory, public_ip=config.public_ip, zone=zone), price
