"""The shipped catalog snapshot and matching resource specs through gpuhunt."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from importlib import resources

import gpuhunt
import pytest
from click.testing import CliRunner

from gpustack_iac.catalog.match import find_offers
from gpustack_iac.catalog.snapshot import load
from gpustack_iac.cli import main
from gpustack_iac.spec.resources import ResourcesSpec

KNOWN = {(g.name.lower(), g.memory) for g in gpuhunt.KNOWN_ACCELERATORS}


def _types(gpu: str, **kw: object) -> set[tuple[str, str]]:
    return {(o.backend, o.instance_type) for o in find_offers(ResourcesSpec(gpu=gpu), spot_policy="on-demand", **kw)}


def test_snapshot_has_a_date_and_every_cloud() -> None:
    snap = load()
    dt.date.fromisoformat(snap.taken)
    assert {"aws", "gcp", "azure"} <= set(snap.providers())
    assert set(snap.providers()) - {"aws", "gcp", "azure"}, "a neocloud for comparison"


def test_every_shipped_entry_is_well_formed() -> None:
    data = resources.files("gpustack_iac.catalog").joinpath("data")
    meta = json.loads(data.joinpath("snapshot.json").read_text())
    for provider in meta["providers"]:
        rows = list(csv.DictReader(io.StringIO(data.joinpath(f"{provider}.csv").read_text())))
        assert rows, provider
        items = list(gpuhunt._internal.storage.load(io.StringIO(data.joinpath(f"{provider}.csv").read_text()), provider=provider))
        assert len(items) == len(rows), f"{provider}: gpuhunt skipped malformed rows"
        seen = set()
        for item in items:
            key = (item.instance_name, item.location, item.spot)
            assert key not in seen, f"duplicate {key}"
            seen.add(key)
            assert item.price > 0 and item.cpu > 0 and item.memory > 0
            if item.gpu_count == 0:  # a CPU-only type
                assert item.gpu_name is None and item.provider in ("aws", "gcp", "azure"), item
                continue
            assert item.gpu_count >= 1 and item.gpu_vendor == gpuhunt.AcceleratorVendor.NVIDIA
            assert (item.gpu_name.lower(), item.gpu_memory) in KNOWN, f"{item.instance_name}: {item.gpu_name} {item.gpu_memory}GB unknown to gpuhunt"
        on_demand = {(i.instance_name, i.location): i.price for i in items if not i.spot}
        for item in items:
            if item.spot:
                assert item.price < on_demand[(item.instance_name, item.location)], f"spot above on-demand: {item}"


def test_24gb_and_up_matches_single_gpu_types_with_at_least_24gb() -> None:
    found = _types("24GB..", backends=["aws"], regions=["us-east-1"])
    assert found == {("aws", t) for t in ("g5.xlarge", "g5.2xlarge", "g6.xlarge", "g6e.xlarge", "p5.4xlarge")}
    assert ("aws", "g4dn.xlarge") not in found  # T4 has 16GB


def test_h100_8_matches_the_eight_gpu_h100_types() -> None:
    assert _types("H100:8", backends=["aws", "gcp", "azure"]) == {
        ("aws", "p5.48xlarge"), ("gcp", "a3-highgpu-8g"), ("azure", "Standard_ND96isr_H100_v5")}


def test_a100_or_h100_one_or_two() -> None:
    assert _types("A100,H100:1..2", backends=["aws", "gcp", "azure"]) == {
        ("aws", "p5.4xlarge"), ("gcp", "a2-highgpu-1g"), ("gcp", "a2-highgpu-2g"), ("gcp", "a2-ultragpu-1g"),
        ("gcp", "a2-ultragpu-2g"), ("gcp", "a3-highgpu-1g"), ("azure", "Standard_NC24ads_A100_v4"),
        ("azure", "Standard_NC48ads_A100_v4")}


def test_a100_80gb_2_per_cloud() -> None:
    assert _types("A100:80GB:2", backends=["aws"], regions=["us-east-1"]) == set()  # AWS sells A100 80GB only by 8
    assert _types("A100:80GB:2", backends=["gcp"], regions=["us-central1"]) == {("gcp", "a2-ultragpu-2g")}
    assert _types("A100:80GB:2", backends=["azure"], regions=["eastus"]) == {("azure", "Standard_NC48ads_A100_v4")}


def test_spot_policy_max_price_and_instance_types() -> None:
    spot = find_offers(ResourcesSpec(gpu="A10G"), backends=["aws"], regions=["us-east-1"], spot_policy="spot")
    assert spot and all(o.spot for o in spot)
    both = find_offers(ResourcesSpec(gpu="A10G"), backends=["aws"], regions=["us-east-1"], spot_policy="auto")
    assert {o.spot for o in both} == {True, False}
    cheap = find_offers(ResourcesSpec(gpu="A10G"), backends=["aws"], spot_policy="on-demand", max_price=1.1)
    assert {o.instance_type for o in cheap} == {"g5.xlarge"}
    only = find_offers(ResourcesSpec(gpu="A10G"), backends=["aws"], instance_types=["g5.2xlarge"])
    assert {o.instance_type for o in only} == {"g5.2xlarge"}
    assert [o.price for o in both] == sorted(o.price for o in both)


def test_cpu_and_memory_ranges() -> None:
    found = find_offers(ResourcesSpec(gpu="A10G:1", cpu="8..", memory="32GB..64GB"), backends=["aws"], spot_policy="on-demand")
    assert {o.instance_type for o in found} == {"g5.2xlarge"}


def test_offers_command_lists_matching_types_with_prices() -> None:
    result = CliRunner().invoke(main, ["offers", "--gpu", "A100:80GB:2", "--on-demand", "--region", "eastus"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("catalog: curated snapshot taken ")
    assert "Standard_NC48ads_A100_v4" in result.output and "$7.3460" in result.output
    assert "a2-ultragpu-2g" not in result.output and "spot " not in result.output


def test_offers_command_reads_a_configuration(tmp_path: object) -> None:
    result = CliRunner().invoke(main, ["offers", "examples/aws", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    requests = {r["request"]: r for r in doc["requests"]}
    fleet = requests["fleet aws-a10g"]
    assert {o["instance_type"] for o in fleet["offers"]} == {"g5.xlarge", "g5.2xlarge"}
    assert {o["region"] for o in fleet["offers"]} == {"us-east-1"}


@pytest.mark.parametrize("args", [["--gpu", "A100::2"], ["--cpu", "lots"]])
def test_offers_command_bad_spec_is_one_message(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["offers", *args])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "error" in result.output


def test_offers_for_kubernetes_capacity_says_it_is_not_in_the_catalog() -> None:
    result = CliRunner().invoke(main, ["offers", "examples/kubernetes"])
    assert result.exit_code == 0, result.output
    assert "fleet k8s-gpus (cpu=2.. mem=8GB.. disk=100GB.. nvidia:1..): kubernetes capacity is not in the catalog" in result.output


def test_offers_gpu_count_that_looks_like_memory_gets_a_did_you_mean() -> None:
    result = CliRunner().invoke(main, ["offers", "--gpu", "A100:80"])
    assert result.exit_code == 0, result.output
    assert "did you mean --gpu A100:80GB?" in result.output
    assert "did you mean" not in CliRunner().invoke(main, ["offers", "--gpu", "A100:80GB"]).output


def test_cpu_only_families_on_every_cloud() -> None:
    cpu = {o.instance_type.split(".")[0] for o in find_offers(ResourcesSpec(cpu="2..", memory="4GB.."), backends=["aws"])}
    assert {"c7i", "m7i", "r7i"} <= cpu
    gcp = {o.instance_type for o in find_offers(ResourcesSpec(), backends=["gcp"], regions=["europe-west4"])}
    assert {"n2-standard-2", "c3-standard-4", "e2-standard-2"} <= gcp
    small = ResourcesSpec(cpu="2..", memory="4GB..")
    azure = {o.instance_type for o in find_offers(small, backends=["azure"], regions=["westeurope"])}
    assert {"Standard_D2s_v5", "Standard_E2s_v5", "Standard_F2s_v2"} <= azure
    # As in dstack, CPUs are x86 unless asked otherwise: Graviton only for `cpu: arm:N`.
    assert not {"c7g", "m7g"} & cpu
    arm = {o.instance_type.split(".")[0] for o in find_offers(ResourcesSpec(cpu="arm:2.."), backends=["aws"])}
    assert arm == {"c7g", "m7g"}


@pytest.mark.parametrize("region, families", [
    ("europe-west4", {"g2-standard", "a2-highgpu", "a2-ultragpu", "a3-highgpu"}),
    ("us-east4", {"g2-standard", "a2-ultragpu", "a3-highgpu"}),
    ("asia-southeast1", {"g2-standard", "a2-highgpu", "a2-ultragpu", "a3-highgpu"}),
])
def test_gcp_gpus_beyond_us_central1(region: str, families: set[str]) -> None:
    from gpustack_iac.catalog.snapshot import family

    found = find_offers(ResourcesSpec(gpu="1.."), backends=["gcp"], regions=[region])
    assert {family("gcp", o.instance_type) for o in found} == families
    assert all(o.region.startswith(region + "-") for o in found)


def test_aws_and_azure_gpus_beyond_the_reference_regions() -> None:
    assert _types("H100:8", backends=["aws"], regions=["eu-north-1"]) == {("aws", "p5.48xlarge")}
    assert ("aws", "g5.xlarge") in _types("A10G", backends=["aws"], regions=["eu-central-1"])
    assert _types("A100:80GB:8", backends=["azure"], regions=["westeurope"]) == {("azure", "Standard_ND96amsr_A100_v4")}
    # A region's price carries its premium over the reference region's list price.
    [ref] = find_offers(ResourcesSpec(gpu="A10G:1", cpu="4", memory="16GB"), backends=["aws"], regions=["us-east-1"],
                        spot_policy="on-demand")
    [tokyo] = find_offers(ResourcesSpec(gpu="A10G:1", cpu="4", memory="16GB"), backends=["aws"],
                          regions=["ap-northeast-1"], spot_policy="on-demand")
    assert tokyo.price > ref.price


def test_offers_region_europe_west4_finds_gpus_and_prints_coverage() -> None:
    result = CliRunner().invoke(main, ["offers", "--gpu", "1..", "--region", "europe-west4", "--limit", "100"])
    assert result.exit_code == 0, result.output
    assert "a3-highgpu-8g" in result.output and "g2-standard-4" in result.output
    assert result.output.splitlines()[1].startswith("coverage: aws ")
    full = CliRunner().invoke(main, ["offers", "--coverage"])
    assert full.exit_code == 0, full.output
    gcp = next(line for line in full.output.splitlines() if line.startswith("gcp: "))
    assert "europe-west4" in gcp and "us-east1" in gcp and "CPU-only c3-standard, e2-standard, n2-highmem, n2-standard" in gcp
