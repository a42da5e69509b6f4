"""The hourly cost of a configuration, from the catalog: per fleet node group, gateway and replica
group, at minimum and at maximum size, and the change against what is deployed.

Local and SSH capacity costs $0 (it is yours); Kubernetes capacity is the cluster's and is not
priced here. A service's replica groups on a cloud run on a fleet's nodes, so they are shown with
their share but counted once, in the fleet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gpustack_iac.catalog.match import find_offers
from gpustack_iac.catalog.snapshot import load
from gpustack_iac.spec.models import FleetConfig, GatewayConfig, ServiceConfig
from gpustack_iac.backends import fleet_host_backend, get
from gpustack_iac.stacks.placement import NoOffer, fleet_groups, vm_backend


@dataclass
class CostItem:
    kind: str  # fleet, gateway, group
    name: str  # fleet / gateway name, or "service/group"
    backend: str
    min_count: int
    max_count: int | None
    hourly: float = 0.0  # $/h of one unit at the price used for the minimum
    max_hourly_unit: float = 0.0  # $/h of one unit at the price used for the maximum (on-demand for spot_policy auto)
    instance_type: str = ""
    region: str = ""
    spot: str = ""  # "spot", "on-demand", "auto", "" where not priced
    counted: bool = True  # part of the total (a group on a fleet's nodes is counted in the fleet)
    note: str = ""

    @property
    def min_hourly(self) -> float:
        return round(self.hourly * self.min_count, 4)

    @property
    def max_hourly(self) -> float | None:
        return None if self.max_count is None else round(self.max_hourly_unit * self.max_count, 4)


@dataclass
class Cost:
    items: list[CostItem] = field(default_factory=list)

    def totals(self) -> tuple[float, float | None]:
        counted = [i for i in self.items if i.counted]
        lo = round(sum(i.min_hourly for i in counted), 4)
        highs = [i.max_hourly for i in counted]
        return lo, (None if any(h is None for h in highs) else round(sum(h for h in highs if h is not None), 4))

    def to_json(self, deployed: Cost | None) -> dict[str, Any]:
        snap = load()
        lo, hi = self.totals()
        out: dict[str, Any] = {
            "currency": "USD", "unit": "hour", "catalog": {"taken": snap.taken, "source": snap.source},
            "items": [{**asdict(i), "min_hourly": i.min_hourly, "max_hourly": i.max_hourly} for i in self.items],
            "total": {"min_hourly": lo, "max_hourly": hi},
        }
        if deployed is not None:
            dlo, dhi = deployed.totals()
            out["deployed"] = {"min_hourly": dlo, "max_hourly": dhi}
            out["change"] = {"min_hourly": round(lo - dlo, 4),
                             "max_hourly": None if hi is None or dhi is None else round(hi - dhi, 4)}
        else:
            out["deployed"] = None
            out["change"] = {"min_hourly": lo, "max_hourly": hi}
        out["line"] = cost_line(out)
        return out


def _money(v: float | None, sign: bool = False) -> str:
    if v is None:
        return "unbounded"
    return f"{'+' if sign and v >= 0 else '-' if v < 0 else ''}${abs(v):,.2f}/h"


def cost_line(cost: dict[str, Any]) -> str:
    """One line: "+$3.10/h at min, up to +$15.50/h (now $0.00/h at min, up to $0.00/h)"."""
    change, total = cost["change"], cost["total"]
    text = f"{_money(change['min_hourly'], True)} at min, up to {_money(change['max_hourly'], True)}"
    text += f" (total {_money(total['min_hourly'])} at min, up to {_money(total['max_hourly'])})"
    if any(get(i["backend"]).free for i in cost["items"]):
        text += "; local and SSH capacity costs $0"
    unpriced = sorted({i["backend"] for i in cost["items"] if not i["counted"] and not i["hourly"]})
    if unpriced:
        text += f"; {', '.join(unpriced)} capacity not priced"
    return text


def fleet_cost(fleet: FleetConfig) -> CostItem:
    backend = fleet_host_backend(fleet).name
    lo = fleet.nodes.min if fleet.nodes is not None and fleet.nodes.min is not None else len(fleet.ssh_config.hosts if fleet.ssh_config else [])
    hi = fleet.nodes.max if fleet.nodes is not None else lo
    if get(backend).free:
        return CostItem("fleet", str(fleet.name), backend, lo or 0, hi, note=f"{backend} hosts cost $0 here")
    if vm_backend(backend) is None:
        return CostItem("fleet", str(fleet.name), backend, lo or 0, hi, counted=False, note=f"{backend} capacity is not priced")
    groups = fleet_groups(fleet, backend)
    first, last = groups[0], groups[-1]
    return CostItem("fleet", str(fleet.name), backend, lo or 0, hi, hourly=first.price, max_hourly_unit=last.price,
                    instance_type=first.group.instance_types[0], region=first.group.region,
                    spot=fleet.spot_policy or "on-demand")


def gateway_cost(gateway: GatewayConfig) -> CostItem:
    vm = vm_backend(gateway.backend)
    if get(gateway.backend).free:
        return CostItem("gateway", str(gateway.name), gateway.backend, 1, 1, note="runs on this machine: $0")
    if vm is None:
        return CostItem("gateway", str(gateway.name), gateway.backend, gateway.replicas, gateway.replicas, counted=False,
                        note=f"{gateway.backend} capacity is not priced")
    itype, price = vm.gateway_type
    if gateway.instance_type and gateway.instance_type != itype:
        return CostItem("gateway", str(gateway.name), gateway.backend, gateway.replicas, gateway.replicas, counted=False,
                        instance_type=gateway.instance_type, region=str(gateway.region), note="instance type not in the catalog")
    return CostItem("gateway", str(gateway.name), gateway.backend, gateway.replicas, gateway.replicas, hourly=price,
                    max_hourly_unit=price, instance_type=itype, region=str(gateway.region), spot="on-demand")


def group_costs(service: ServiceConfig, backend: str, fleet_backends: set[str]) -> list[CostItem]:
    """One item per replica group; raises NoOffer naming the group when a cloud group has no offer."""
    out = []
    for group in service.groups:
        name = f"{service.name}/{group.name}"
        backends = list(group.backends or [backend])
        lo, hi = group.replicas.min or 0, group.replicas.max
        cloud = [b for b in backends if get(b).priced]
        if not cloud:
            b = backends[0]
            free = get(b).free
            out.append(CostItem("group", name, b, lo, hi, counted=free,
                                note="local replicas cost $0" if free else f"{b} capacity is not priced"))
            continue
        policy = group.spot_policy or "on-demand"
        offers = find_offers(group.resources, backends=cloud, regions=group.regions, instance_types=group.instance_types,
                             spot_policy=policy, max_price=group.max_price)
        if not offers:
            raise NoOffer(f"service {service.name} group {group.name}: no {'/'.join(cloud)} instance type"
                          + (f" in {', '.join(group.regions)}" if group.regions else "")
                          + f" fits {(group.resources.describe() if group.resources else 'the default resources')}"
                          + (f" under max_price ${group.max_price}/h" if group.max_price else ""))
        on_fleet = bool(set(cloud) & fleet_backends)
        top = max((o.price for o in offers if o.instance_type == offers[0].instance_type and o.region == offers[0].region),
                  default=offers[0].price) if policy == "auto" else offers[0].price
        out.append(CostItem("group", name, offers[0].backend, lo, hi, hourly=offers[0].price, max_hourly_unit=top,
                            instance_type=offers[0].instance_type, region=offers[0].region, spot=policy,
                            counted=not on_fleet, note="on the fleet's nodes (counted there)" if on_fleet else ""))
    return out


def _resources_from_runtime(res: dict[str, Any] | None) -> Any:
    from gpustack_iac.spec.resources import ResourcesSpec

    if not res:
        return None

    def rng(r: dict[str, Any], unit: str = "") -> str:
        lo = "" if not r.get("min") else f"{r['min']}{unit}"
        hi = "" if r.get("max") is None else f"{r['max']}{unit}"
        return lo if lo and lo == hi else f"{lo or 0}..{hi}"

    kwargs: dict[str, Any] = {"cpu": rng(res["cpu"]), "memory": rng(res["memory_bytes"], "B")}
    gpu = res.get("gpu")
    if gpu:
        obj: dict[str, Any] = {"count": rng(gpu["count"])}
        if gpu.get("vendor"):
            obj["vendor"] = gpu["vendor"]
        if gpu.get("names"):
            obj["name"] = gpu["names"]
        if gpu.get("memory_bytes", {}).get("min"):
            obj["memory"] = rng(gpu["memory_bytes"], "B")
        kwargs["gpu"] = obj
    return ResourcesSpec(**kwargs)


def deployed_cost(specs: dict[tuple[str, str], dict[str, Any]]) -> Cost | None:
    """The cost of what the state records (the component specs a previous `up` wrote); None when
    nothing is deployed or a recorded spec no longer reads (then the plan shows totals only)."""
    if not specs:
        return None
    cost = Cost()
    try:
        fleets = [FleetConfig.model_validate(s) for (kind, _), s in specs.items() if kind == "fleet"]
        fleet_backends = {fleet_host_backend(f).name for f in fleets}
        cost.items += [fleet_cost(f) for f in fleets]
        cost.items += [gateway_cost(GatewayConfig.model_validate(s)) for (kind, _), s in specs.items() if kind == "gateway"]
        for (kind, name), definition in specs.items():
            if kind != "service":
                continue
            for group in definition.get("groups", []):
                placement = group.get("placement") or {}
                backends = placement.get("backends") or ["local"]
                lo, hi = group["replicas"]["min"] or 0, group["replicas"]["max"]
                cloud = [b for b in backends if get(b).priced]
                if not cloud:
                    cost.items.append(CostItem("group", f"{name}/{group['name']}", backends[0], lo, hi,
                                               counted=get(backends[0]).free))
                    continue
                offers = find_offers(_resources_from_runtime(group.get("resources")), backends=cloud,
                                     regions=placement.get("regions"), instance_types=placement.get("instance_types"),
                                     spot_policy=placement.get("spot_policy") or "on-demand", max_price=placement.get("max_price"))
                price = offers[0].price if offers else 0.0
                cost.items.append(CostItem("group", f"{name}/{group['name']}", cloud[0], lo, hi, hourly=price,
                                           max_hourly_unit=price, counted=not (set(cloud) & fleet_backends)))
    except (ValueError, NoOffer, KeyError, TypeError):
        return None
    return cost
