"""Resource specs → gpuhunt query filters → the offers that fit, cheapest first.

gpuhunt's `matches` decides whether one offer fits one filter. A spec can ask for what one filter
cannot say (several GPU names with a count range is fine; a name list is a list), so this module
only translates units (our bytes → gpuhunt's GB) and adds what gpuhunt leaves to its caller:
regions, instance type lists and the spot policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal

import gpuhunt

from gpustack_iac.catalog.snapshot import PROVIDER_OF_BACKEND, Snapshot, load
from gpustack_iac.spec.resources import GPUSpec, Memory, Range, ResourcesSpec

SpotPolicy = Literal["spot", "on-demand", "auto"]
_GB = 1024**3


@dataclass(frozen=True)
class Offer:
    backend: str
    instance_type: str
    region: str  # the catalog's location: a region, or a zone on GCP
    price: float  # $/h
    spot: bool
    cpu: int
    memory_gb: float
    gpu_name: str | None
    gpu_count: int
    gpu_memory_gb: float | None
    cpu_arch: str = "x86"  # gpuhunt's: "x86" or "arm"; one image and one runtime per architecture

    @property
    def gpu(self) -> str:
        if not self.gpu_count:
            return "-"
        return f"{self.gpu_name}:{self.gpu_memory_gb:g}GB:{self.gpu_count}"


def _arch(item: Any) -> str:
    """gpuhunt's CPU architecture as its plain value ("x86", "arm"); x86 where the catalog has none."""
    arch = getattr(item, "cpu_arch", None)
    return str(getattr(arch, "value", arch) or "x86")


def _gb(m: Memory | None) -> float | None:
    return None if m is None else m.bytes / _GB


def _ends(r: Range[Memory] | None) -> tuple[float | None, float | None]:
    return (None, None) if r is None else (_gb(r.min), _gb(r.max))


def query_filter(resources: ResourcesSpec | None, *, max_price: float | None = None) -> gpuhunt.QueryFilter:
    """The gpuhunt filter for a resource spec (disk is left out: cloud disks are sized separately)."""
    resources = resources or ResourcesSpec()
    q = gpuhunt.QueryFilter(min_cpu=resources.cpu.min, max_cpu=resources.cpu.max,
                            min_memory=_gb(resources.memory.min), max_memory=_gb(resources.memory.max),
                            max_price=max_price)
    # As in dstack, CPUs are x86 unless the spec asks for arm (`cpu: arm:8`): an x86 image must not land on Graviton.
    q.cpu_arch = gpuhunt.CPUArchitecture.cast(resources.cpu_arch or "x86")
    gpu: GPUSpec | None = resources.gpu
    if gpu is None or gpu.none:
        q.max_gpu_count = 0
        return q
    q.min_gpu_count, q.max_gpu_count = gpu.count.min, gpu.count.max
    if gpu.vendor:
        q.gpu_vendor = gpuhunt.AcceleratorVendor.cast(gpu.vendor)
    if gpu.names:
        q.gpu_name = list(gpu.names)
    q.min_gpu_memory, q.max_gpu_memory = _ends(gpu.memory)
    q.min_total_gpu_memory, q.max_total_gpu_memory = _ends(gpu.total_memory)
    if gpu.compute_capability:
        major, minor = gpu.compute_capability.split(".")
        q.min_compute_capability = (int(major), int(minor))
    return q


def _in_region(location: str, regions: Iterable[str]) -> bool:
    # GCP offers are per zone (us-central1-a); a configuration names the region (us-central1).
    return any(location == r or location.startswith(r + "-") and location.count("-") == r.count("-") + 1 for r in regions)


def find_offers(resources: ResourcesSpec | None, *, backends: Iterable[str] | None = None,
                regions: Iterable[str] | None = None, instance_types: Iterable[str] | None = None,
                spot_policy: SpotPolicy | None = None, max_price: float | None = None,
                snapshot: Snapshot | None = None) -> list[Offer]:
    """Every catalog offer that fits, cheapest first. `spot_policy` None or auto keeps both kinds."""
    snapshot = snapshot or load()
    q = query_filter(resources, max_price=max_price)
    if backends:
        providers = [PROVIDER_OF_BACKEND[b] for b in backends if b in PROVIDER_OF_BACKEND]
        if not providers:
            return []
        q.provider = providers
    if spot_policy in ("spot", "on-demand"):
        q.spot = spot_policy == "spot"
    regions = list(regions or [])
    wanted_types = {t.lower() for t in instance_types or []}
    backend_of = {p: b for b, p in PROVIDER_OF_BACKEND.items()}
    offers = [
        Offer(backend=backend_of.get(i.provider, i.provider), instance_type=i.instance_name, region=i.location,
              price=i.price, spot=i.spot, cpu=i.cpu, memory_gb=i.memory, gpu_name=i.gpu_name, gpu_count=i.gpu_count,
              gpu_memory_gb=i.gpu_memory, cpu_arch=_arch(i))
        for i in snapshot.items
        if gpuhunt.matches(i, q)
        and (not regions or _in_region(i.location, regions))
        and (not wanted_types or i.instance_name.lower() in wanted_types)
    ]
    return sorted(offers, key=lambda o: (o.price, o.backend, o.instance_type, o.region))
