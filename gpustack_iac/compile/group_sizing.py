"""Node groups nothing will size: said at plan, before `up` makes a group that never grows.

A VM fleet's `nodes: min..max` is a promise that the controller grows the group towards `max` when
replicas need nodes and shrinks it back. The controller that does it is a gateway's: one of the
fleet's backend in the fleet's region (it is handed exactly those groups and granted their resize).
Where the fleet's backend cannot size its groups (`Backend.sizes_node_groups` is False), or no such
gateway exists, the group is created at its minimum and stays there, so:

- a fleet whose range is wider than its minimum is warned about, naming the fleet, the backend and
  the property (`nodes`);
- a service replica group that may only run on such fleets, all at 0 nodes, can never be placed:
  `up` would succeed and the service would wait for a host forever, so plan refuses it.

Capability-driven: a backend that gains sizing loses both messages with no change here.
"""

from __future__ import annotations

from typing import Callable, Sequence

from gpustack_iac.backends import fleet_backend, get, implemented
from gpustack_iac.backends.cloud import NodeGroup
from gpustack_iac.errors import Diagnostic
from gpustack_iac.spec.models import Document, FleetConfig, ServiceConfig

Diag = Callable[[Document, str, str], Diagnostic]


def service_fleets(service: ServiceConfig, fleets: Sequence[FleetConfig]) -> list[FleetConfig]:
    """The fleets a service may run on: those it names (`fleets:`), or every fleet of the stack."""
    named = set(service.fleets or ())
    return [f for f in fleets if not named or str(f.name) in named]


def _bounds(groups: Sequence[NodeGroup]) -> tuple[int, int]:
    """A fleet's node count at its minimum and at most (spot plus its on-demand fallback)."""
    return sum(g.min_size for g in groups), max(g.max_size for g in groups)


def _sizers() -> str:
    return ", ".join(b.name for b in implemented() if b.sizes_node_groups and b.kind == "cloud-vm") or "none"


def _why_unsized(fleet: FleetConfig, groups: Sequence[NodeGroup], gateways: Sequence[tuple[str, str]]) -> str | None:
    """Why nothing sizes the fleet's groups (`gateways`: each cloud gateway's backend and region), or None."""
    backend = get(fleet_backend(fleet))
    if not backend.sizes_node_groups:
        return f"the {backend.name} backend does not size node groups yet (sizes_node_groups)"
    region = groups[0].region
    if (backend.name, region) not in gateways:
        return (f"no {backend.name} gateway in {region} sizes them (a gateway's controller sizes the node groups of "
                f"its backend and region)")
    return None


def check_unsized(fleets: Sequence[FleetConfig], services: Sequence[ServiceConfig], node_groups: dict[str, list[NodeGroup]],
                  gateways: Sequence[tuple[str, str]], service_backend: dict[str, str], warn: Callable[[str], None],
                  diag: Diag) -> list[Diagnostic]:
    """Warn about every unsized fleet with a range; refuse service groups that only unsized fleets at 0 nodes could serve."""
    unsized: dict[str, str] = {}  # fleet → why
    for fleet in fleets:
        name = str(fleet.name)
        groups = node_groups.get(name)
        why = _why_unsized(fleet, groups, gateways) if groups else None
        if not groups or why is None:
            continue
        unsized[name] = why
        low, high = _bounds(groups)
        if high > low:
            warn(f"fleet {name}: nodes {low}..{high} on {fleet_backend(fleet)}: {why}, so the group stays at its "
                 f"minimum of {low} node(s) after up; set nodes: {max(low, 1)}, or add the gateway or use a backend "
                 f"that sizes them ({_sizers()})")
    if not unsized:
        return []
    return [p for s in services for p in _unplaceable(s, fleets, node_groups, unsized, service_backend[str(s.name)], diag)]


def _unplaceable(service: ServiceConfig, fleets: Sequence[FleetConfig], node_groups: dict[str, list[NodeGroup]],
                 unsized: dict[str, str], backend: str, diag: Diag) -> list[Diagnostic]:
    candidates = service_fleets(service, fleets)
    problems = []
    for i, group in enumerate(service.groups):
        backends = set(group.backends or [backend])
        serving = [f for f in candidates if fleet_backend(f) in backends and str(f.name) in node_groups]
        if not serving or (group.replicas.max == 0):
            continue  # no fleet at all is _check_served's to say; a group of 0 replicas needs no node
        if any(str(f.name) not in unsized or _bounds(node_groups[str(f.name)])[0] > 0 for f in serving):
            continue
        names = ", ".join(sorted(f"{f.name} ({fleet_backend(f)})" for f in serving))
        whys = "; ".join(sorted({unsized[str(f.name)] for f in serving}))
        at = f"replica_groups[{i}].replicas" if service.replica_groups else "replicas"
        problems.append(diag(service, at, f"service {service.name} group {group.name}: replicas {group.replicas} can never "
                             f"be placed: its fleets {names} have nodes min 0 and {whys}, so no node ever starts; "
                             f"give a fleet a minimum (nodes: 1..), or add the gateway or use a backend that sizes "
                             f"them ({_sizers()})"))
    return problems
