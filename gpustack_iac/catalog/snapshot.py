"""The shipped offline snapshot: one gpuhunt v2 CSV per provider under data/, with the date taken.

The CSV format and its reader are gpuhunt's own (`gpuhunt._internal.storage`, the same code that
reads the catalogs dstack downloads), so a file from `scripts/refresh_catalog.py --live` and the
curated one load alike.
"""

from __future__ import annotations

import io
import json
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
