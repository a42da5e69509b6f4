"""Host matching: which agent may run one more replica of a group, and which GPUs it gets.

Pure functions over the agents' host facts (`GET /v1/host`), their registration labels and the
resources already taken by replicas placed there, so every rule is testable without a GPU.

Accounting rules (documented for operators in docs/runtime.md):
- GPUs are exclusive: a replica gets `count.min` whole GPUs that no other replica holds.
- Memory and disk are reserved: the `min` of every replica on a host must fit in its total.
- CPUs are shared: the host must have at least `cpu.min` cores; replicas may overcommit them
  (processes share cores, and refusing that would make a laptop run one replica per core).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from gpustack_iac.runtime.controller.model import GroupDef, PlacementPolicy, Resources


GPU_MEMORY_TOLERANCE = 0.08


@dataclass(frozen=True)
class HostGpu:
    index: int
    name: str
    vendor: str
    memory_bytes: int


@dataclass(frozen=True)
class HostFacts:
    name: str
    cpus: int
    memory_bytes: int
    disk_bytes: int
    gpus: tuple[HostGpu, ...] = ()
    docker: bool = False

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "HostFacts":
        gpus = tuple(
            HostGpu(
                index=int(g.get("index", i)),
                name=str(g.get("name", "")),
                vendor=str(g.get("vendor") or "nvidia"),
                memory_bytes=int(g.get("memory_bytes") or 0),
            )
            for i, g in enumerate(data.get("gpus") or [])
        )
        return HostFacts(
            name=str(data.get("name", "")),
            cpus=int(data.get("cpus") or 0),
            memory_bytes=int(data.get("memory_bytes") or 0),
            disk_bytes=int(data.get("disk_bytes") or 0),
            gpus=gpus,
            docker=bool(data.get("docker", False)),
        )


@dataclass(frozen=True)
class AgentView:
    """What placement knows about one registered agent."""

    name: str
    host: HostFacts | None  # None until the controller reached the agent
    labels: Mapping[str, Any] = field(default_factory=dict)
    healthy: bool = True


@dataclass(frozen=True)
class Reservation:
    """Resources one placed replica holds on its agent."""

    memory_bytes: int = 0
    disk_bytes: int = 0
    gpus: tuple[int, ...] = ()
    host_port: int | None = None  # a port the replica's own commands bind on the host (no $PORT)


@dataclass(frozen=True)
class Assignment:
    agent: str
    reservation: Reservation


@dataclass(frozen=True)
class NoCapacity:
    """Why no agent can take the replica: one reason per agent (or one overall line)."""

    reasons: tuple[tuple[str, str], ...]

    def message(self) -> str:
        if not self.reasons:
            return "no agent registered"
        return "; ".join(f"{agent}: {why}" for agent, why in self.reasons)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f}GiB"


def label_mismatch(policy: PlacementPolicy, labels: Mapping[str, Any]) -> str | None:
    """The first placement label that rules the agent out, or None (issue 5 item 6)."""
    if policy.backends and str(labels.get("backend", "")) not in policy.backends:
        return f"backend {labels.get('backend')!r} not in {list(policy.backends)}"
    if policy.regions and str(labels.get("region", "")) not in policy.regions:
        return f"region {labels.get('region')!r} not in {list(policy.regions)}"
    if policy.instance_types and str(labels.get("instance_type", "")) not in policy.instance_types:
        return f"instance type {labels.get('instance_type')!r} not in {list(policy.instance_types)}"
    spot = _truthy(labels.get("spot", False))
    if policy.spot_policy == "spot" and not spot:
        return "spot_policy is spot but the host is on-demand"
    if policy.spot_policy in ("on-demand", "on_demand", "ondemand") and spot:
        return "spot_policy is on-demand but the host is spot"
    if policy.max_price is not None:
        try:
            price = float(labels.get("price") or 0.0)
        except (TypeError, ValueError):
            return f"price label {labels.get('price')!r} is not a number"
        if price > policy.max_price:
            return f"price {price} above max_price {policy.max_price}"
    return None


def _truthy(value: Any) -> bool:
    """Labels may arrive as strings ("true", "false") from some callers; "false" must not be true."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _gpu_fits(req_names: tuple[str, ...], vendor: str | None, mem_min: float, mem_max: float | None, gpu: HostGpu) -> bool:
    if vendor and gpu.vendor.lower() != vendor.lower():
        return False
    if req_names:
        # The spec names a model ("A100"), the driver a full product name ("NVIDIA A100-SXM4-80GB").
        if not any(_name_matches(n, gpu.name) for n in req_names):
            return False
    # Drivers report less than the marketed size (an A10G "24GB" shows 22.5 GiB, an H100 "80GB"
    # 79.6 GiB), and the spec names the marketed size: compare with a tolerance.
    if gpu.memory_bytes < mem_min * (1 - GPU_MEMORY_TOLERANCE):
        return False
    return mem_max is None or gpu.memory_bytes <= mem_max * (1 + GPU_MEMORY_TOLERANCE)


def _name_matches(wanted: str, product: str) -> bool:
    """True when `wanted` spells whole consecutive words of `product`, ignoring spaces and dashes
    ("RTX5090" matches "NVIDIA GeForce RTX 5090"; "A10" does not match "A100")."""
    tokens = [t for t in re.split(r"[\s_\-]+", product.lower()) if t]
    compact = re.sub(r"[\s_\-]+", "", wanted.lower())
    return any("".join(tokens[i:j]) == compact for i in range(len(tokens)) for j in range(i + 1, len(tokens) + 1))


def fit(resources: Resources, agent: AgentView, taken: list[Reservation]) -> Reservation | str:
    """The reservation one more replica would get on `agent`, or the reason it does not fit."""
    host = agent.host
    if host is None:
        return "host facts unknown (agent not reached yet)"
    if not agent.healthy:
        return "agent unreachable"
    if host.cpus < resources.cpu.min:
        return f"needs {resources.cpu.min:g} CPUs, host has {host.cpus}"
    mem_used = sum(r.memory_bytes for r in taken)
    mem_need = int(resources.memory_bytes.min)
    if host.memory_bytes - mem_used < mem_need:
        return f"needs {_gib(mem_need)} memory, {_gib(host.memory_bytes - mem_used)} free"
    disk_used = sum(r.disk_bytes for r in taken)
    disk_need = int(resources.disk_bytes.min)
    if host.disk_bytes - disk_used < disk_need:
        return f"needs {_gib(disk_need)} disk, {_gib(host.disk_bytes - disk_used)} free"
    gpus: tuple[int, ...] = ()
    req = resources.gpu
    if req is not None and (req.count.min > 0 or req.count.max not in (None, 0)):
        want = max(int(req.count.min), 1)
        matching = [
            g for g in host.gpus if _gpu_fits(req.names, req.vendor, req.memory_bytes.min, req.memory_bytes.max, g)
        ]
        if not matching:
            names = ",".join(req.names) or (req.vendor or "any")
            have = ", ".join(f"{g.name} {_gib(g.memory_bytes)}" for g in host.gpus) or "no GPUs"
            return f"needs GPU {names}:{want} (memory {_gib(req.memory_bytes.min)}..), host has {have}"
        busy = {i for r in taken for i in r.gpus}
        free = [g.index for g in matching if g.index not in busy]
        if len(free) < want:
            return f"needs {want} matching GPUs, {len(free)} free of {len(matching)}"
        gpus = tuple(sorted(free)[:want])
    return Reservation(memory_bytes=mem_need, disk_bytes=disk_need, gpus=gpus)


def place(
    group: GroupDef,
    agents: list[AgentView],
    taken: Mapping[str, list[Reservation]],
    spread: Mapping[str, int] | None = None,
) -> Assignment | NoCapacity:
    """Pick the agent for one more replica of `group`.

    `taken` maps agent name to the reservations of every replica already placed there (all
    services); `spread` counts this group's replicas per agent, so replicas of one group spread
    over hosts before doubling up (one host failure then takes fewer of them down).
    """
    reasons: list[tuple[str, str]] = []
    fits: list[tuple[int, int, str, Reservation]] = []
    for agent in agents:
        if group.hosts and agent.name not in group.hosts:
            reasons.append((agent.name, f"not the host of the group's volumes ({', '.join(group.hosts)})"))
            continue
        why = label_mismatch(group.placement, agent.labels)
        if why is not None:
            reasons.append((agent.name, why))
            continue
        if group.image and agent.host is not None and not agent.host.docker:
            reasons.append((agent.name, f"image {group.image} needs Docker, the host has none"))
            continue
        held = list(taken.get(agent.name, []))
        if group.host_port is not None and any(r.host_port == group.host_port for r in held):
            reasons.append((agent.name, f"port {group.host_port} is taken by another replica on this host (the commands "
                                        "bind the declared port themselves: one replica per host and port)"))
            continue
        got = fit(group.resources, agent, held)
        if isinstance(got, str):
            reasons.append((agent.name, got))
            continue
        load = (spread or {}).get(agent.name, 0)
        if group.host_port is not None:
            got = replace(got, host_port=group.host_port)
        fits.append((load, len(taken.get(agent.name, [])), agent.name, got))
    if not fits:
        return NoCapacity(tuple(reasons))
    fits.sort(key=lambda f: (f[0], f[1], f[2]))
    _, _, name, reservation = fits[0]
    return Assignment(agent=name, reservation=reservation)


def reservation_for(resources: Resources, gpus: tuple[int, ...], host_port: int | None = None) -> Reservation:
    """The reservation a replica already placed holds (rebuilt from the store after a restart)."""
    return Reservation(
        memory_bytes=int(resources.memory_bytes.min), disk_bytes=int(resources.disk_bytes.min), gpus=tuple(gpus),
        host_port=host_port,
    )
