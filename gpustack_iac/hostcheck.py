"""Plan-time placement check: can every replica group run on at least one host of the stack?

The controller answers "no capacity" only after `up` has started processes; the same rules
(`runtime/controller/placement.py`) applied here to the host facts known at plan time turn that
into a plan error. The check takes host facts from any backend: the local backend measures this
machine (`local_hosts`); a backend that learns its hosts on refresh (SSH fleets) hands its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from gpustack_iac.runtime.agent.hostinfo import StaticFacts, host_report
from pydantic import TypeAdapter

from gpustack_iac.runtime.controller.model import GroupDef, Resources, parse_service
from gpustack_iac.runtime.controller.placement import AgentView, HostFacts, NoCapacity, fit, place

# A GPU count above this is most likely a memory size written without its unit (A100:80 for A100:80GB).
LIKELY_GPU_COUNT = 16


@dataclass(frozen=True)
class PlannedHost:
    """A host the stack will have, as placement sees it: its name, labels and measured facts."""

    name: str
    facts: HostFacts
    labels: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unsatisfiable:
    group_index: int
    group: str
    message: str


def local_hosts(names_and_labels: Iterable[tuple[str, Mapping[str, Any]]], disk_path: Path) -> list[PlannedHost]:
    """Hosts of local fleets: every one is this machine, measured once."""
    hosts = list(names_and_labels)
    if not hosts:
        return []
    disk = disk_path if disk_path.exists() else Path.cwd()
    report = host_report(StaticFacts.gather(None), disk)
    return [PlannedHost(name, HostFacts.from_json({**report, "name": name}), labels) for name, labels in hosts]


def planned_host(name: str, facts: Mapping[str, Any], labels: Mapping[str, Any]) -> PlannedHost:
    """A host whose facts a backend measured itself (HostFacts JSON: cpus, memory_bytes, disk_bytes, gpus)."""
    return PlannedHost(name, HostFacts.from_json({**facts, "name": name}), labels)


def unsatisfiable_groups(definition: Mapping[str, Any], hosts: Sequence[PlannedHost]) -> list[Unsatisfiable]:
    """Groups of the service definition that no host can take even one replica of (empty without hosts)."""
    if not hosts:
        return []
    service = parse_service(dict(definition))
    agents = [AgentView(name=h.name, host=h.facts, labels=h.labels) for h in hosts]
    found = []
    for i, group in enumerate(service.groups):
        got = place(group, agents, {})
        if isinstance(got, NoCapacity):
            found.append(Unsatisfiable(i, group.name, got.message() + gpu_count_hint(group)))
    return found


def task_shortfall(resources: Mapping[str, Any], nodes: int, hosts: Sequence[PlannedHost]) -> str | None:
    """Why a task's nodes (one per host) cannot all be placed on the planned hosts by the task runner's
    own rule (`fit`), or None (also when no host facts are known)."""
    if not hosts:
        return None
    wanted = TypeAdapter(Resources).validate_python(dict(resources))
    reasons = []
    for h in hosts:
        got = fit(wanted, AgentView(name=h.name, host=h.facts, labels=h.labels), [])
        if isinstance(got, str):
            reasons.append(f"{h.name}: {got}")
    fitting = len(hosts) - len(reasons)
    if fitting >= nodes:
        return None
    return f"needs {nodes} host{'s' if nodes > 1 else ''}, {fitting} fit ({'; '.join(reasons)})"


def gpu_count_hint(group: GroupDef) -> str:
    gpu = group.resources.gpu
    if gpu is None or gpu.count.min <= LIKELY_GPU_COUNT:
        return ""
    count = int(gpu.count.min)
    name = gpu.names[0] if gpu.names else "A100"
    return f" (gpu count {count} asks for {count} GPUs: did you mean {count}GB of GPU memory, {name}:{count}GB?)"
