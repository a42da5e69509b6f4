"""Regenerate the GPU catalog snapshot shipped in gpustack_iac/catalog/data/.

Two sources, both written in gpuhunt's own v2 catalog CSV format (gpuhunt._internal.storage):

    python scripts/refresh_catalog.py --live      # where network exists: gpuhunt's published catalogs
    python scripts/refresh_catalog.py --curated   # offline: the curated table below

`--live` loads gpuhunt's catalogs (the ones dstack reads) and keeps the GPU offers of the
providers and regions listed in REGIONS. `--curated` writes the hand-kept table below: real
instance types with on-demand list prices as published by the clouds; spot prices are typical
recent figures and move hourly. GPU memory comes from gpuhunt's KNOWN_NVIDIA_GPUS, so a name the
library does not know fails here instead of in a plan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import gpuhunt
from gpuhunt._internal import storage
from gpuhunt.version import __version__ as gpuhunt_version

DATA = Path(__file__).resolve().parents[1] / "gpustack_iac" / "catalog" / "data"
PROVIDERS = ("aws", "gcp", "azure", "lambdalabs", "nebius")
REGIONS: dict[str, tuple[str, ...]] = {
    "aws": ("us-east-1", "us-west-2"),
    "gcp": ("us-central1-a", "us-central1-c"),
    "azure": ("eastus", "eastus2"),
    "lambdalabs": ("us-east-1", "us-west-1"),
    "nebius": ("eu-north1",),
}

# provider: (instance type, vCPUs, memory GB, GPU name, GPU count, GPU memory GB or None for the
#            known one, on-demand $/h, spot $/h or None where the provider sells no spot)
CURATED: dict[str, list[tuple[str, int, float, str, int, float | None, float, float | None]]] = {
    "aws": [
        ("g4dn.xlarge", 4, 16, "T4", 1, None, 0.526, 0.2114),
        ("g4dn.12xlarge", 48, 192, "T4", 4, None, 3.912, 1.5762),
        ("g5.xlarge", 4, 16, "A10G", 1, None, 1.006, 0.4355),
        ("g5.2xlarge", 8, 32, "A10G", 1, None, 1.212, 0.4846),
        ("g5.12xlarge", 48, 192, "A10G", 4, None, 5.672, 2.3021),
        ("g5.48xlarge", 192, 768, "A10G", 8, None, 16.288, 6.5218),
        ("g6.xlarge", 4, 16, "L4", 1, None, 0.8048, 0.3512),
        ("g6.12xlarge", 48, 192, "L4", 4, None, 4.6016, 1.9733),
        ("g6e.xlarge", 4, 32, "L40S", 1, None, 1.861, 0.8012),
        ("g6e.12xlarge", 48, 384, "L40S", 4, None, 10.493, 4.4217),
        ("p4d.24xlarge", 96, 1152, "A100", 8, 40, 21.9576, 9.7034),
        ("p4de.24xlarge", 96, 1152, "A100", 8, 80, 27.4470, 12.1126),
        ("p5.4xlarge", 16, 256, "H100", 1, None, 4.3260, 2.1630),
        ("p5.48xlarge", 192, 2048, "H100", 8, None, 55.0400, 24.3210),
        ("p5en.48xlarge", 192, 2048, "H200", 8, None, 63.2960, 27.9780),
    ],
    "gcp": [
        ("g2-standard-4", 4, 16, "L4", 1, None, 0.7069, 0.2792),
        ("g2-standard-24", 24, 96, "L4", 2, None, 1.9999, 0.7895),
        ("g2-standard-48", 48, 192, "L4", 4, None, 3.9998, 1.5790),
        ("a2-highgpu-1g", 12, 85, "A100", 1, 40, 3.6730, 1.4692),
        ("a2-highgpu-2g", 24, 170, "A100", 2, 40, 7.3470, 2.9385),
        ("a2-highgpu-8g", 96, 680, "A100", 8, 40, 29.3878, 11.7540),
        ("a2-ultragpu-1g", 12, 170, "A100", 1, 80, 5.0688, 2.0275),
        ("a2-ultragpu-2g", 24, 340, "A100", 2, 80, 10.1376, 4.0550),
        ("a2-ultragpu-8g", 96, 1360, "A100", 8, 80, 40.5503, 16.2201),
        ("a3-highgpu-1g", 26, 234, "H100", 1, None, 11.0613, 3.7500),
        ("a3-highgpu-8g", 208, 1872, "H100", 8, None, 88.4904, 30.0000),
    ],
    "azure": [
        ("Standard_NC4as_T4_v3", 4, 28, "T4", 1, None, 0.526, 0.1578),
        ("Standard_NC8as_T4_v3", 8, 56, "T4", 1, None, 0.752, 0.2256),
        ("Standard_NV36ads_A10_v5", 36, 440, "A10", 1, None, 3.200, 0.9600),
        ("Standard_NC24ads_A100_v4", 24, 220, "A100", 1, 80, 3.673, 1.1019),
        ("Standard_NC48ads_A100_v4", 48, 440, "A100", 2, 80, 7.346, 2.2038),
        ("Standard_NC96ads_A100_v4", 96, 880, "A100", 4, 80, 14.692, 4.4076),
        ("Standard_ND96amsr_A100_v4", 96, 1900, "A100", 8, 80, 32.770, 9.8310),
        ("Standard_NC40ads_H100_v5", 40, 320, "H100NVL", 1, None, 6.980, 2.0940),
        ("Standard_ND96isr_H100_v5", 96, 1900, "H100", 8, None, 98.320, 29.4960),
    ],
    "lambdalabs": [
        ("gpu_1x_a10", 30, 200, "A10", 1, None, 0.75, None),
        ("gpu_1x_a100_sxm4", 30, 200, "A100", 1, 40, 1.29, None),
        ("gpu_8x_a100_80gb_sxm4", 240, 1800, "A100", 8, 80, 14.32, None),
        ("gpu_1x_h100_pcie", 26, 200, "H100", 1, None, 2.49, None),
        ("gpu_8x_h100_sxm5", 208, 1800, "H100", 8, None, 23.92, None),
    ],
    "nebius": [
        ("gpu-h100-sxm 1gpu-16vcpu-200gb", 16, 200, "H100", 1, None, 2.95, 1.25),
        ("gpu-h100-sxm 8gpu-128vcpu-1600gb", 128, 1600, "H100", 8, None, 23.60, 10.00),
        ("gpu-h200-sxm 8gpu-128vcpu-1600gb", 128, 1600, "H200", 8, None, 28.80, 12.00),
    ],
}


def _known_memory(name: str) -> float:
    sizes = sorted({g.memory for g in gpuhunt.KNOWN_NVIDIA_GPUS if g.name.lower() == name.lower()})
    if not sizes:
        raise SystemExit(f"{name} is not in gpuhunt.KNOWN_NVIDIA_GPUS")
    return float(sizes[0])


def curated() -> dict[str, list[gpuhunt.CatalogItem]]:
    out: dict[str, list[gpuhunt.CatalogItem]] = {}
    for provider, rows in CURATED.items():
        items = []
        for location in REGIONS[provider]:
            for name, cpu, memory, gpu, count, gpu_memory, price, spot in rows:
                for is_spot, cost in ((False, price), (True, spot)):
                    if cost is None:
                        continue
                    items.append(gpuhunt.CatalogItem(
                        provider=provider, instance_name=name, location=location, price=cost, cpu=cpu,
                        memory=memory, gpu_count=count, gpu_name=gpu, gpu_memory=gpu_memory or _known_memory(gpu),
                        spot=is_spot, disk_size=None, gpu_vendor=gpuhunt.AcceleratorVendor.NVIDIA))
        out[provider] = items
    return out


def live() -> dict[str, list[gpuhunt.CatalogItem]]:
    catalog = gpuhunt.Catalog(auto_reload=False)
    catalog.load()
    out = {}
    for provider in PROVIDERS:
        items = catalog.query(provider=provider, min_gpu_count=1)
        out[provider] = [i for i in items if i.location in REGIONS[provider]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--live", action="store_true", help="download gpuhunt's published catalogs (needs network)")
    group.add_argument("--curated", action="store_true", help="write the curated table in this script")
    args = parser.parse_args()
    catalogs = live() if args.live else curated()
    DATA.mkdir(parents=True, exist_ok=True)
    for provider, items in catalogs.items():
        storage.dump(sorted(items, key=lambda i: (i.location, i.spot, i.price)), str(DATA / f"{provider}.csv"))
    meta = {"taken": dt.date.today().isoformat(), "source": "gpuhunt" if args.live else "curated",
            "gpuhunt": gpuhunt_version,
            "providers": sorted(catalogs)}
    (DATA / "snapshot.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {sum(len(v) for v in catalogs.values())} offers to {DATA}")


if __name__ == "__main__":
    main()
