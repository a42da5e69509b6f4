"""The shipped offline snapshot: one gpuhunt v2 CSV per provider under data/, with the date taken.

The CSV format and its reader are gpuhunt's own (`gpuhunt._internal.storage`, the same code that
reads the catalogs dstack downloads), so a file from `scripts/refresh_catalog.py --live` and the
curated one load alike.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import gpuhunt
from gpuhunt._internal import storage

# Our backend names → gpuhunt's provider names (the same except where gpuhunt spells it otherwise).
PROVIDER_OF_BACKEND: dict[str, str] = {"aws": "aws", "gcp": "gcp", "azure": "azure", "lambda": "lambdalabs",
                                       "nebius": "nebius"}


@dataclass(frozen=True)
class Snapshot:
    taken: str  # ISO date the prices were taken
    source: str  # "gpuhunt" (downloaded) or "curated"
    items: tuple[gpuhunt.CatalogItem, ...]

    def providers(self) -> list[str]:
        return sorted({i.provider for i in self.items})

    def coverage(self) -> list[Coverage]:
        """Per provider: the regions (GCP zones folded into their region) and instance families it has."""
        out = []
        for provider in self.providers():
            items = [i for i in self.items if i.provider == provider]
            regions = {region_of(provider, i.location) for i in items}
            gpu = {family(provider, i.instance_name) for i in items if i.gpu_count}
            cpu = {family(provider, i.instance_name) for i in items if not i.gpu_count}
            out.append(Coverage(provider, tuple(sorted(regions)), tuple(sorted(gpu)), tuple(sorted(cpu))))
        return out


@dataclass(frozen=True)
class Coverage:
    provider: str
    regions: tuple[str, ...]
    gpu_families: tuple[str, ...]
    cpu_families: tuple[str, ...]

    def line(self) -> str:
        cpu = f", CPU-only {', '.join(self.cpu_families)}" if self.cpu_families else ""
        return (f"{self.provider}: {len(self.regions)} regions × {len(self.gpu_families) + len(self.cpu_families)} families "
                f"(GPU {', '.join(self.gpu_families)}{cpu}); regions {', '.join(self.regions)}")


def _aws_family(instance: str) -> str:
    return instance.split(".")[0]  # g5.xlarge -> g5


def _gcp_family(instance: str) -> str:
    return "-".join(instance.split("-")[:2])  # a2-ultragpu-2g -> a2-ultragpu


def _azure_family(instance: str) -> str:
    size = re.sub(r"^([A-Z]+)\d+", r"\1", instance.removeprefix("Standard_"))  # NC24ads_A100_v4 -> NCadsA100_v4
    return size.replace("_", "", 1)


def _gcp_region(location: str) -> str:
    """GCP's catalog locations are zones (`us-central1-a`); the others' are regions."""
    return location.rsplit("-", 1)[0] if location.count("-") == 2 else location


# How each gpuhunt provider spells its instance types and locations (keyed by gpuhunt's provider
# names: a fact about the catalog's data, not a backend's capability).
_FAMILY_OF_PROVIDER = {"aws": _aws_family, "gcp": _gcp_family, "azure": _azure_family}
_REGION_OF_PROVIDER = {"gcp": _gcp_region}


def family(provider: str, instance: str) -> str:
    """An instance type's family: `g5` (AWS), `a2-ultragpu` (GCP), `NCadsA100_v4` / `Dsv5` (Azure)."""
    rule = _FAMILY_OF_PROVIDER.get(provider)
    return rule(instance) if rule else instance


def region_of(provider: str, location: str) -> str:
    rule = _REGION_OF_PROVIDER.get(provider)
    return rule(location) if rule else location


def _data() -> resources.abc.Traversable:
    return resources.files("gpustack_iac.catalog").joinpath("data")


@lru_cache(maxsize=1)
def load() -> Snapshot:
    """The shipped snapshot (read once per process: it is package data and never changes under us)."""
    data = _data()
    meta = json.loads(data.joinpath("snapshot.json").read_text())
    items: list[gpuhunt.CatalogItem] = []
    for provider in meta["providers"]:
        text = data.joinpath(f"{provider}.csv").read_text()
        items.extend(storage.load(io.StringIO(text), provider=provider))
    return Snapshot(taken=meta["taken"], source=meta["source"], items=tuple(items))


@lru_cache(maxsize=1)
def gcp_zones() -> dict[str, tuple[str, ...]]:
    """GCP region → its zones (data/gcp_zones.json): zone names differ per region (us-east1 has no
    zone a), so a gateway's zone is chosen from this, never guessed."""
    data = json.loads(_data().joinpath("gcp_zones.json").read_text())
    return {region: tuple(zones) for region, zones in data["zones"].items()}
