"""The service definition the stack registers with the controller, as plain dataclasses.

The JSON shape is the contract in docs/runtime-api.md ("Service definition"). Pydantic's
TypeAdapter validates it straight into these stdlib dataclasses, so the rest of the controller
works with plain, hashable values and never with raw dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from gpustack_iac.contract.scaling import ScalingConfig
from gpustack_iac.errors import RuntimeApiError


class ServiceDefinitionError(RuntimeApiError):
    """A service definition sent to the control API does not match the contract."""


@dataclass(frozen=True)
class Range:
    min: float = 0
    max: float | None = None

    def contains(self, value: float) -> bool:
        return value >= self.min and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class ReplicaRange:
    min: int
    max: int

    @property
    def fixed(self) -> bool:
        return self.min == self.max


@dataclass(frozen=True)
class GpuRequirement:
    vendor: str | None = None
    names: tuple[str, ...] = ()
    count: Range = field(default_factory=lambda: Range(1, None))
    memory_bytes: Range = field(default_factory=Range)


@dataclass(frozen=True)
class Resources:
    cpu: Range = field(default_factory=Range)
    memory_bytes: Range = field(default_factory=Range)
    disk_bytes: Range = field(default_factory=Range)
    gpu: GpuRequirement | None = None


@dataclass(frozen=True)
class PlacementPolicy:
    backends: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    instance_types: tuple[str, ...] = ()
    spot_policy: str | None = None  # "spot" | "on-demand" | "auto" | None
    max_price: float | None = None


@dataclass(frozen=True)
class Probe:
    url: str = "/"
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    timeout: float = 5.0
    interval: float = 2.0

    def __hash__(self) -> int:
        return hash((self.url, self.method, tuple(sorted(self.headers.items())), self.body, self.timeout, self.interval))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    format: str = "openai"
    prefix: str = "/v1"


@dataclass(frozen=True)
class MountDef:
    """A host directory the agent makes available to the replica (docs/workloads.md)."""

    source: str
    target: str
    name: str = ""


@dataclass(frozen=True)
class RegistryAuthDef:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ContainerDef:
    """How an `image:` group's containers run (docs/workloads.md, "Containers"); the port is the service's."""

    entrypoint: str | None = None
    user: str | None = None
    privileged: bool = False
    shm_size: int | None = None  # bytes
    registry_auth: RegistryAuthDef | None = None
    auth_fingerprint: str | None = None  # the stack's keyed hash of the password: rolls the group when it changes


@dataclass(frozen=True)
class GroupDef:
    name: str
    generation: str
    replicas: ReplicaRange
    commands: tuple[str, ...] = ()
    scaling: ScalingConfig | None = None
    image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    resources: Resources = field(default_factory=Resources)
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    mounts: tuple[MountDef, ...] = ()
    hosts: tuple[str, ...] = ()  # when set, only these agents may run the group (its volumes live there)
    container: ContainerDef = field(default_factory=ContainerDef)
    # Process replicas whose commands bind the service's declared port themselves (no $PORT): the
    # agent gives them that port, and placement puts at most one per host and port.
    host_port: int | None = None

    def __hash__(self) -> int:
        return hash((self.name, self.generation))


@dataclass(frozen=True)
class RateLimitKeyDef:
    type: str = "ip_address"  # or "header"
    header: str | None = None


@dataclass(frozen=True)
class RateLimitDef:
    rps: float
    prefix: str = "/"
    burst: int = 0
    key: RateLimitKeyDef = field(default_factory=RateLimitKeyDef)


@dataclass(frozen=True)
class ServiceDef:
    name: str
    generation: str
    groups: tuple[GroupDef, ...]
    port: int | None = None
    auth: bool = True
    model: ModelInfo | None = None
    probe: Probe | None = None
    # Every readiness probe (dstack's `probes:` list); all must pass. Empty: just `probe`.
    probes: tuple[Probe, ...] = ()
    scaling: ScalingConfig | None = None
    rate_limits: tuple[RateLimitDef, ...] = ()

    def __hash__(self) -> int:
        return hash((self.name, self.generation))

    @property
    def all_probes(self) -> tuple[Probe, ...]:
        """The probes a replica must pass to be ready (none: the default probe)."""
        return self.probes or ((self.probe,) if self.probe is not None else ())

    def group(self, name: str) -> GroupDef | None:
        return next((g for g in self.groups if g.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_ADAPTER: TypeAdapter[ServiceDef] = TypeAdapter(ServiceDef)


T = TypeVar("T")


def _validated(adapter: TypeAdapter[T], data: Any, what: str) -> T:
    """`data` as the adapter's type, or ServiceDefinitionError naming every problem by its path."""
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors()
        )
        raise ServiceDefinitionError(f"invalid {what} definition: {problems}") from exc


def parse_service(data: Any) -> ServiceDef:
    """Validate a service definition (a decoded JSON object) or raise ServiceDefinitionError."""
    service = _validated(_ADAPTER, data, "service")
    _check(service)
    return service


def _check(service: ServiceDef) -> None:
    problems: list[str] = []
    if not service.name or "/" in service.name:
        problems.append("name must be a non-empty string without '/'")
    # Scaling blocks are checked while parsing (contract/scaling.py's ScalingConfig).
    if not service.groups:
        problems.append("groups must list at least one replica group")
    for i, limit in enumerate(service.rate_limits):
        where = f"rate_limits[{i}]"
        if not limit.rps > 0 or limit.burst < 0:
            problems.append(f"{where}: expected rps > 0 and burst >= 0")
        if not limit.prefix.startswith("/"):
            problems.append(f"{where}.prefix: expected a path starting with '/', got {limit.prefix!r}")
        if limit.key.type not in ("ip_address", "header") or (limit.key.type == "header") != bool(limit.key.header):
            problems.append(f"{where}.key: expected type ip_address, or type header with a header name")
    seen: set[str] = set()
    for i, g in enumerate(service.groups):
        where = f"groups[{i}]"
        if g.name in seen:
            problems.append(f"{where}.name: duplicate group name {g.name!r}")
        seen.add(g.name)
        if g.replicas.min < 0 or g.replicas.max < g.replicas.min:
            problems.append(f"{where}.replicas: expected 0 <= min <= max, got {g.replicas.min}..{g.replicas.max}")
        if not g.replicas.fixed and g.scaling is None and service.scaling is None:
            problems.append(f"{where}.replicas: a range needs scaling (on the group or the service)")
        if not g.commands and g.image is None:
            problems.append(f"{where}: needs commands or an image")
    if problems:
        raise ServiceDefinitionError("invalid service definition: " + "; ".join(problems))


def effective_scaling(service: ServiceDef, group: GroupDef) -> ScalingConfig | None:
    """A group's own scaling overrides the service's (issue 5 item 2)."""
    return group.scaling if group.scaling is not None else service.scaling


@dataclass(frozen=True)
class RouterMemberDef:
    service: str
    weight: float = 1.0
    priority: int = 0
    cost: float | None = None
    max_in_flight_per_replica: int | None = None


@dataclass(frozen=True)
class RouterDef:
    """A `type: router` registration: one model alias (`name`) served by several services."""

    name: str
    members: tuple[RouterMemberDef, ...]
    strategy: str = "priority"
    auth: bool = True
    fallbacks: tuple[str, ...] = ()
    retries: int = 2
    cooldown_failures: int = 3
    cooldown_seconds: float = 60.0
    ewma_alpha: float = 0.3

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_ROUTER_ADAPTER: TypeAdapter[RouterDef] = TypeAdapter(RouterDef)


def parse_router(data: Any) -> RouterDef:
    """Validate a router registration or raise ServiceDefinitionError."""
    router = _validated(_ROUTER_ADAPTER, data, "router")
    if not router.members:
        raise ServiceDefinitionError("invalid router definition: members must list at least one service")
    return router
