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

from gpustack_iac.catalog.snapshot import family

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


# Where each GPU family is sold besides REGIONS (the clouds' public per-region instance tables, checked
# 2026-12), and CPU-only families (services without GPUs need a node too). Prices outside the
# reference regions are the reference price × the region's usual premium (REGION_PREMIUM), rounded:
# close to the published figure, not equal to it (a --live refresh replaces them).
FAMILY_REGIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "aws": {
        "g4dn": ("us-east-2", "us-west-1", "ca-central-1", "eu-west-1", "eu-west-2", "eu-central-1", "eu-north-1",
                 "ap-northeast-1", "ap-northeast-2", "ap-southeast-1", "ap-southeast-2", "ap-south-1", "sa-east-1"),
        "g5": ("us-east-2", "ca-central-1", "eu-west-1", "eu-west-2", "eu-central-1", "eu-north-1", "ap-northeast-1",
               "ap-northeast-2", "ap-south-1"),
        "g6": ("us-east-2", "eu-west-2", "eu-central-1", "eu-north-1", "ap-northeast-1", "ap-south-1", "ca-central-1"),
        "g6e": ("us-east-2", "eu-north-1", "ap-northeast-1"),
        "p4d": ("us-east-2", "eu-west-1", "eu-central-1", "ap-northeast-1", "ap-northeast-2"),
        "p4de": (),
        "p5": ("us-east-2", "eu-north-1", "ap-northeast-1", "ap-south-1"),
        "p5en": ("us-east-2", "ap-northeast-1"),
        "cpu": ("us-east-2", "us-west-1", "ca-central-1", "eu-west-1", "eu-west-2", "eu-central-1", "eu-north-1",
                "ap-northeast-1", "ap-southeast-1", "ap-southeast-2", "ap-south-1"),
    },
    "gcp": {
        "g2-standard": ("us-east1", "us-east4", "us-west1", "us-west4", "europe-west1", "europe-west4", "asia-east1",
               "asia-northeast1", "asia-southeast1", "asia-south1"),
        "a2-highgpu": ("us-east1", "us-west1", "europe-west4", "asia-northeast1", "asia-northeast3", "asia-southeast1"),
        "a2-ultragpu": ("us-east4", "us-east5", "europe-west4", "asia-southeast1"),
        "a3-highgpu": ("us-east4", "us-east5", "us-west1", "us-west4", "europe-west1", "europe-west4", "asia-northeast1",
                       "asia-southeast1"),
        "cpu": ("us-east1", "us-east4", "us-west1", "us-west4", "europe-west1", "europe-west2", "europe-west3",
                "europe-west4", "asia-east1", "asia-northeast1", "asia-southeast1", "asia-south1"),
    },
    "azure": {
        "NCasT4_v3": ("westus2", "southcentralus", "westeurope", "northeurope", "uksouth", "southeastasia", "japaneast",
                      "centralindia"),
        "NVadsA10_v5": ("southcentralus", "westus2", "westeurope"),
        "NCadsA100_v4": ("southcentralus", "westus2", "westeurope"),
        "NDamsrA100_v4": ("southcentralus", "westus2", "westeurope"),
        "NCadsH100_v5": ("southcentralus", "westus3"),
        "NDisrH100_v5": ("southcentralus", "westus3", "westeurope", "swedencentral"),
        "cpu": ("westus2", "westus3", "southcentralus", "westeurope", "northeurope", "uksouth", "swedencentral",
                "southeastasia", "japaneast", "centralindia"),
    },
}

REGION_PREMIUM: dict[str, float] = {
    # AWS
    "us-west-1": 1.17, "ca-central-1": 1.1, "eu-west-1": 1.1, "eu-west-2": 1.16, "eu-central-1": 1.19,
    "eu-north-1": 1.05, "ap-northeast-1": 1.26, "ap-northeast-2": 1.21, "ap-southeast-1": 1.25,
    "ap-southeast-2": 1.26, "ap-south-1": 1.12, "sa-east-1": 1.58,
    # GCP
    "us-east4": 1.13, "us-west4": 1.12, "us-east5": 1.0, "europe-west1": 1.1, "europe-west2": 1.2, "europe-west3": 1.2,
    "europe-west4": 1.1, "asia-east1": 1.16, "asia-northeast1": 1.28, "asia-northeast3": 1.28, "asia-southeast1": 1.23,
    "asia-south1": 1.2,
    # Azure
    "westus3": 1.0, "westeurope": 1.15, "northeurope": 1.08, "uksouth": 1.16, "swedencentral": 1.06,
    "southeastasia": 1.2, "japaneast": 1.27, "centralindia": 1.1,
}

# provider: (instance type, vCPUs, memory GB, CPU architecture, on-demand $/h in the reference regions, spot $/h)
CPU_ONLY: dict[str, list[tuple[str, int, float, str, float, float]]] = {
    "aws": [
        ("c7i.large", 2, 4, "x86", 0.08925, 0.0357), ("c7i.xlarge", 4, 8, "x86", 0.1785, 0.0714),
        ("c7i.2xlarge", 8, 16, "x86", 0.357, 0.1428), ("c7i.4xlarge", 16, 32, "x86", 0.714, 0.2856),
        ("m7i.large", 2, 8, "x86", 0.1008, 0.0403), ("m7i.xlarge", 4, 16, "x86", 0.2016, 0.0806),
        ("m7i.2xlarge", 8, 32, "x86", 0.4032, 0.1613), ("m7i.4xlarge", 16, 64, "x86", 0.8064, 0.3226),
        ("r7i.large", 2, 16, "x86", 0.1323, 0.0529), ("r7i.xlarge", 4, 32, "x86", 0.2646, 0.1058),
        ("r7i.2xlarge", 8, 64, "x86", 0.5292, 0.2117),
        ("c7g.medium", 1, 2, "arm", 0.0363, 0.0145), ("c7g.large", 2, 4, "arm", 0.0725, 0.029),
        ("c7g.xlarge", 4, 8, "arm", 0.145, 0.058), ("c7g.2xlarge", 8, 16, "arm", 0.29, 0.116),
        ("m7g.medium", 1, 4, "arm", 0.0408, 0.0163), ("m7g.large", 2, 8, "arm", 0.0816, 0.0326),
        ("m7g.xlarge", 4, 16, "arm", 0.1632, 0.0653), ("m7g.2xlarge", 8, 32, "arm", 0.3264, 0.1306),
    ],
    "gcp": [
        ("e2-standard-2", 2, 8, "x86", 0.067, 0.0201), ("e2-standard-4", 4, 16, "x86", 0.134, 0.0402),
        ("e2-standard-8", 8, 32, "x86", 0.268, 0.0804),
        ("n2-standard-2", 2, 8, "x86", 0.0971, 0.0235), ("n2-standard-4", 4, 16, "x86", 0.1942, 0.047),
        ("n2-standard-8", 8, 32, "x86", 0.3885, 0.094), ("n2-highmem-4", 4, 32, "x86", 0.262, 0.0634),
        ("c3-standard-4", 4, 16, "x86", 0.2093, 0.0189), ("c3-standard-8", 8, 32, "x86", 0.4186, 0.0378),
        ("c3-standard-22", 22, 88, "x86", 1.1511, 0.1039),
    ],
    "azure": [
        ("Standard_D2s_v5", 2, 8, "x86", 0.096, 0.0192), ("Standard_D4s_v5", 4, 16, "x86", 0.192, 0.0384),
        ("Standard_D8s_v5", 8, 32, "x86", 0.384, 0.0768),
        ("Standard_E2s_v5", 2, 16, "x86", 0.126, 0.0252), ("Standard_E4s_v5", 4, 32, "x86", 0.252, 0.0504),
        ("Standard_E8s_v5", 8, 64, "x86", 0.504, 0.1008),
        # No F v5 exists: the F family's current general-purpose generation is Fsv2.
        ("Standard_F2s_v2", 2, 4, "x86", 0.0846, 0.0169), ("Standard_F4s_v2", 4, 8, "x86", 0.169, 0.0338),
        ("Standard_F8s_v2", 8, 16, "x86", 0.338, 0.0677),
    ],
}


def _zones(provider: str, region: str) -> tuple[str, ...]:
    """GCP offers are per zone: the first two zones of the region (data/gcp_zones.json)."""
    if provider != "gcp":
        return (region,)
    zones = json.loads((DATA / "gcp_zones.json").read_text())["zones"]
    return tuple(zones[region][:2])


def _locations(provider: str, fam: str) -> list[tuple[str, float]]:
    """(location, price factor) where a family is sold: the reference REGIONS and its own."""
    extra = FAMILY_REGIONS.get(provider, {}).get(fam, ())
    out = [(loc, 1.0) for loc in REGIONS[provider]]
    out += [(zone, REGION_PREMIUM.get(region, 1.0)) for region in extra for zone in _zones(provider, region)]
    return out


def _known_memory(name: str) -> float:
    sizes = sorted({g.memory for g in gpuhunt.KNOWN_NVIDIA_GPUS if g.name.lower() == name.lower()})
    if not sizes:
        raise SystemExit(f"{name} is not in gpuhunt.KNOWN_NVIDIA_GPUS")
    return float(sizes[0])


def curated() -> dict[str, list[gpuhunt.CatalogItem]]:
    out: dict[str, list[gpuhunt.CatalogItem]] = {}
    for provider, rows in CURATED.items():
        items = []
        for name, cpu, memory, gpu, count, gpu_memory, price, spot in rows:
            for location, factor in _locations(provider, family(provider, name)):
                for is_spot, cost in ((False, price), (True, spot)):
                    if cost is None:
                        continue
                    items.append(gpuhunt.CatalogItem(
                        provider=provider, instance_name=name, location=location, price=round(cost * factor, 4), cpu=cpu,
                        memory=memory, gpu_count=count, gpu_name=gpu, gpu_memory=gpu_memory or _known_memory(gpu),
                        spot=is_spot, disk_size=None, gpu_vendor=gpuhunt.AcceleratorVendor.NVIDIA))
        items += _cpu_only(provider)
        out[provider] = items
    return out


def _cpu_only(provider: str) -> list[gpuhunt.CatalogItem]:
    items = []
    for name, cpu, memory, arch, price, spot in CPU_ONLY.get(provider, []):
        for location, factor in _locations(provider, "cpu"):
            for is_spot, cost in ((False, price), (True, spot)):
                items.append(gpuhunt.CatalogItem(
                    provider=provider, instance_name=name, location=location, price=round(cost * factor, 4), cpu=cpu,
                    memory=memory, gpu_count=0, gpu_name=None, gpu_memory=None, spot=is_spot, disk_size=None,
                    cpu_arch=gpuhunt.CPUArchitecture.cast(arch)))
    return items


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
