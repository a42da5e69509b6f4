"""GCP and Azure defects a review of the plan found (issue 18), each pinned by the resource graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack_iac.errors import ConfigError
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import MOCK_TENANT, compile_dir, run, write

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GATEWAY = "type: gateway\nname: gw\nbackend: {backend}\nregion: {region}\n"


@need_sdk("pulumi_gcp")
class TestGcp:
    @pytest.mark.parametrize("region, zone", [("us-east1", "us-east1-b"), ("europe-west1", "europe-west1-b"),
                                              ("us-central1", "us-central1-a")])
    def test_the_gateway_zone_is_one_the_region_has(self, region: str, zone: str, tmp_path: Path) -> None:
        graph = run(write(tmp_path, {"g.gpustack.yml": GATEWAY.format(backend="gcp", region=region)}), tmp_path)
        assert graph.one("gcp:compute/instance:Instance", "gw").inputs["zone"] == zone  # us-east1-a does not exist

    def test_an_unknown_region_is_a_plan_error(self, tmp_path: Path) -> None:
        write(tmp_path, {"g.gpustack.yml": GATEWAY.format(backend="gcp", region="mars-north1")})
        with pytest.raises(ConfigError) as caught:
            compile_dir(tmp_path, tmp_path)
        [diag] = caught.value.diagnostics
        assert diag.path == "region" and "mars-north1" in diag.message

    def test_the_group_spans_only_zones_offering_its_gpu(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "gcp", tmp_path)
        for mig in graph.of_type("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"):
            zones = mig.inputs["distributionPolicyZones"]
            # The catalog offers a2-ultragpu-2g (A100 80GB) in us-central1-a and -c, not in -b or -f.
            assert zones and set(zones) <= {"us-central1-a", "us-central1-c"}, zones

    def test_the_apis_the_stack_calls_are_enabled_and_kept_on_destroy(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "gcp", tmp_path)
        apis = {s.inputs["service"]: s.inputs for s in graph.of_type("gcp:projects/service:Service")}
        assert {"compute.googleapis.com", "secretmanager.googleapis.com", "iam.googleapis.com", "dns.googleapis.com"} <= set(apis)
        assert all(a["disableOnDestroy"] is False for a in apis.values())

    def test_the_boot_disk_holds_the_served_model(self, tmp_path: Path) -> None:
        # The example serves Llama-3.1-70B: 140 GB of weights at 16 bits, more than the 100 GB default.
        graph = run(EXAMPLES / "gcp", tmp_path)
        for template in graph.of_type("gcp:compute/instanceTemplate:InstanceTemplate"):
            assert template.inputs["disks"][0]["diskSizeGb"] >= 200

    def test_a_named_disk_too_small_for_the_model_is_kept_and_warned_about(self, tmp_path: Path) -> None:
        for f in (EXAMPLES / "gcp").glob("*.yml"):
            text = f.read_text()
            (tmp_path / f.name).write_text(text.replace("  gpu: A100:80GB:2\nssh_from", "  gpu: A100:80GB:2\n  disk: 120GB\nssh_from"))
        compiled = compile_dir(tmp_path, tmp_path)
        assert any("disk 120GB may not hold service llama's model" in w for w in compiled.warnings), compiled.warnings


@need_sdk("pulumi_azure_native")
class TestAzure:
    def test_key_vault_trusts_the_clients_tenant_never_all_zeros(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("ARM_TENANT_ID", raising=False)
        monkeypatch.delenv("AZURE_TENANT_ID", raising=False)
        graph = run(EXAMPLES / "azure", tmp_path)
        assert {v.inputs["properties"]["tenantId"] for v in graph.of_type("azure-native:keyvault:Vault")} == {MOCK_TENANT}
        monkeypatch.setenv("ARM_TENANT_ID", "99999999-8888-7777-6666-555555555555")
        graph = run(EXAMPLES / "azure", tmp_path)
        assert {v.inputs["properties"]["tenantId"] for v in graph.of_type("azure-native:keyvault:Vault")} == {
            "99999999-8888-7777-6666-555555555555"}

    def test_vm_and_scale_sets_log_in_by_ssh_key_only(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "azure", tmp_path)
        profiles = [graph.one("azure-native:compute:VirtualMachine").inputs["osProfile"]]
        profiles += [s.inputs["virtualMachineProfile"]["osProfile"] for s in graph.of_type("azure-native:compute:VirtualMachineScaleSet")]
        for profile in profiles:
            linux = profile["linuxConfiguration"]
            assert linux["disablePasswordAuthentication"] is True
            [key] = linux["ssh"]["publicKeys"]
            assert key["path"] == "/home/gpustack/.ssh/authorized_keys" and key["keyData"]
        assert all(k.inputs["algorithm"] == "ED25519" for k in graph.of_type("tls:index/privateKey:PrivateKey"))

    def test_scale_set_public_ips_are_standard_sku(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "azure", tmp_path)
        for vmss in graph.of_type("azure-native:compute:VirtualMachineScaleSet"):
            nic = vmss.inputs["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
            assert nic["ipConfigurations"][0]["publicIPAddressConfiguration"]["sku"] == {"name": "Standard", "tier": "Regional"}
            assert vmss.inputs["orchestrationMode"] == "Uniform"


@pytest.mark.parametrize("backend, region", [("gcp", "us-central1"), ("azure", "eastus"), ("kubernetes", None)])
def test_public_ip_false_is_refused_where_it_is_not_implemented(backend: str, region: str | None, tmp_path: Path) -> None:
    text = f"type: gateway\nname: gw\nbackend: {backend}\n" + (f"region: {region}\n" if region else "") + "public_ip: false\n"
    write(tmp_path, {"g.gpustack.yml": text})
    with pytest.raises(ConfigError) as caught:
        compile_dir(tmp_path, tmp_path)
    [diag] = caught.value.diagnostics
    assert diag.path == "public_ip" and f"not implemented on {backend}" in diag.message and "aws" in diag.message
