"""The GCP and Azure stacks as resource graphs under Pulumi mocks."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path


from tests.cloud.bootscripts import config, unit_argv
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import run, secret_value, write

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _fleet(backend: str, region: str, policy: str, gpu: str = "A100:80GB:2") -> str:
    return (f"type: fleet\nname: big\nbackends: [{backend}]\nregions: [{region}]\nnodes: 0..2\nspot_policy: {policy}\n"
            f"ssh_from: [203.0.113.0/24]\nresources:\n  gpu: {gpu}\n")


@need_sdk("pulumi_gcp")
class TestGcp:
    def test_a100_80gb_2_in_us_central1_is_a2_ultragpu_2g(self, tmp_path: Path) -> None:
        graph = run(write(tmp_path, {"f.gpustack.yml": _fleet("gcp", "us-central1", "on-demand")}), tmp_path)
        template = graph.one("gcp:compute/instanceTemplate:InstanceTemplate", "big").inputs
        assert template["machineType"] == "a2-ultragpu-2g"
        assert template["disks"][0]["sourceImage"].startswith("projects/deeplearning-platform-release/")
        assert template["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": True}
        mig = graph.one("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "big")
        assert mig.inputs["region"] == "us-central1" and mig.ignore_changes == ["targetSize"]

    def test_spot_maps_to_the_spot_provisioning_model(self, tmp_path: Path) -> None:
        graph = run(write(tmp_path, {"f.gpustack.yml": _fleet("gcp", "us-central1", "auto")}), tmp_path)
        spot = graph.one("gcp:compute/instanceTemplate:InstanceTemplate", "big-spot").inputs["scheduling"]
        assert spot["provisioningModel"] == "SPOT" and spot["preemptible"] is True and spot["automaticRestart"] is False
        assert spot["instanceTerminationAction"] == "DELETE"
        od = graph.one("gcp:compute/instanceTemplate:InstanceTemplate", "big-on-demand").inputs["scheduling"]
        assert "provisioningModel" not in od

    def test_firewalls_token_and_startup_script(self, tmp_path: Path) -> None:
        graph = run(write(tmp_path, {"f.gpustack.yml": _fleet("gcp", "us-central1", "spot")}), tmp_path)
        rules = {r.name: (r.inputs["allows"][0]["ports"], r.inputs["sourceRanges"]) for r in graph.of_type("gcp:compute/firewall:Firewall")}
        assert rules == {"big-agent": (["8600"], ["10.60.0.0/16"]), "big-ssh": (["22"], ["203.0.113.0/24"])}
        for version in graph.of_type("gcp:secretmanager/secretVersion:SecretVersion"):
            token = secret_value(version.inputs["secretData"])
            assert version.ignore_changes == ["secretData"] and token not in graph.dump_without(version)
        script = graph.one("gcp:compute/instanceTemplate:InstanceTemplate", "big").inputs["metadataStartupScript"]
        assert "bootfetch.py /opt/gpustack/boot.json secret gpustack-proj-dev-big-agent-token /var/lib/gpustack/agent.token" in script
        assert config(script)["project"] == "mock-project"
        members = graph.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")  # (the runtime's read: test_runtime_wiring)
        # The node account reads its agent token and its fleet's join token.
        assert len(members) == 2 and {m.inputs["role"] for m in members} == {"roles/secretmanager.secretAccessor"}

    def test_nodes_join_the_gateway_by_secret_name(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "gcp", tmp_path)
        join_id = "gpustack-proj-dev-gcp-a100-join-token"
        assert graph.one("gcp:secretmanager/secret:Secret", "gcp-a100-join-token").inputs["secretId"] == join_id
        for group in ("gcp-a100-spot", "gcp-a100-on-demand"):
            script = graph.one("gcp:compute/instanceTemplate:InstanceTemplate", group).inputs["metadataStartupScript"]
            assert f"secret {join_id} /var/lib/gpustack/join.token" in script
            argv = unit_argv(script, "gpustack-agent")
            assert argv[argv.index("--controller-url") + 1] == "http://10.60.0.10:8443"
            assert argv[argv.index("--node-group") + 1] == f"gpustack-proj-dev-{group}" and "backend=gcp" in argv
        gw = graph.one("gcp:compute/instance:Instance")
        assert gw.inputs["networkInterfaces"][0]["networkIp"] == "10.60.0.10"
        gw_script = gw.inputs["metadataStartupScript"]
        assert "--join-token-dir /var/lib/gpustack/joins" in " ".join(unit_argv(gw_script, "gpustack-gateway"))
        # Each fleet's join token by its own id (the account lists nothing), re-read every minute.
        refresh = unit_argv(gw_script, "gpustack-joins")
        assert refresh[refresh.index("secrets-under") + 1:] == [f"gcp-a100={join_id}", "/var/lib/gpustack/joins", "--every", "60"]
        # The gateway's account is granted the fleet's join secret (a real dependency on it).
        gw_members = [m for m in graph.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
                      if m.name.startswith("gcp-gateway-gw-")]
        assert len(gw_members) == 3
        join_rule = graph.one("gcp:compute/firewall:Firewall", "gcp-gateway-join").inputs
        assert join_rule["allows"] == [{"protocol": "tcp", "ports": ["8443"]}] and join_rule["sourceRanges"] == ["10.60.0.0/16"]

    def test_gateway_with_a_domain(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "gcp", tmp_path)
        assert graph.one("gcp:compute/address:Address").inputs["addressType"] == "EXTERNAL"
        assert graph.one("gcp:dns/managedZone:ManagedZone").inputs["dnsName"] == "llm.example.com."
        names = sorted(r.inputs["name"] for r in graph.of_type("gcp:dns/recordSet:RecordSet"))
        assert names == ["*.llm.example.com.", "llm.example.com."]
        script = graph.one("gcp:compute/instance:Instance").inputs["metadataStartupScript"]
        assert "--certificate lets-encrypt" in script
        public = graph.one("gcp:compute/firewall:Firewall", "gcp-gateway-gateway").inputs
        assert public["allows"][0]["ports"] == ["80", "443"]


@need_sdk("pulumi_azure_native")
class TestAzure:
    def test_a100_80gb_2_in_eastus_is_nc48ads_and_spot_fields(self, tmp_path: Path) -> None:
        graph = run(write(tmp_path, {"f.gpustack.yml": _fleet("azure", "eastus", "auto")}), tmp_path)
        sets = {s.name: s for s in graph.of_type("azure-native:compute:VirtualMachineScaleSet")}
        assert {n: s.inputs["sku"]["name"] for n, s in sets.items()} == {
            "big-spot": "Standard_NC48ads_A100_v4", "big-on-demand": "Standard_NC48ads_A100_v4"}
        spot = sets["big-spot"].inputs["virtualMachineProfile"]
        assert spot["priority"] == "Spot" and spot["evictionPolicy"] == "Delete" and spot["billingProfile"] == {"maxPrice": -1}
        assert "priority" not in sets["big-on-demand"].inputs["virtualMachineProfile"]
        assert all(s.ignore_changes == ["sku.capacity"] for s in sets.values())
        assert spot["storageProfile"]["imageReference"]["publisher"] == "microsoft-dsvm"

    def test_nsg_key_vault_and_user_data(self, tmp_path: Path) -> None:
        graph = run(write(tmp_path, {"f.gpustack.yml": _fleet("azure", "eastus", "on-demand")}), tmp_path)
        rules = graph.one("azure-native:network:NetworkSecurityGroup").inputs["securityRules"]
        assert sorted((r["destinationPortRange"], tuple(r["sourceAddressPrefixes"])) for r in rules) == [
            ("22", ("203.0.113.0/24",)), ("8600", ("10.60.0.0/16",))]
        for secret in graph.of_type("azure-native:keyvault:Secret"):  # the agent token and the join token
            token = secret_value(secret.inputs["properties"])["value"]
            assert secret.ignore_changes == ["properties.value"] and token not in graph.dump_without(secret)
        vmss = graph.one("azure-native:compute:VirtualMachineScaleSet").inputs
        script = base64.b64decode(vmss["virtualMachineProfile"]["userData"]).decode()
        assert "secret big-kv/agent-token /var/lib/gpustack/agent.token" in script
        assert config(script)["identity"] == "client-big"  # the managed identity IMDS signs in as
        roles = [r.inputs for r in graph.of_type("azure-native:authorization:RoleAssignment")
                 if r.inputs["roleDefinitionId"].endswith("4633458b-17de-408a-b874-0445c86b69e6")]  # Key Vault Secrets User
        assert len(roles) == 1

    def test_gateway_with_a_domain(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "azure", tmp_path)
        assert graph.one("azure-native:network:PublicIPAddress").inputs["publicIPAllocationMethod"] == "Static"
        assert graph.one("azure-native:dns:Zone").inputs["zoneName"] == "llm.example.com"
        names = sorted(r.inputs["relativeRecordSetName"] for r in graph.of_type("azure-native:dns:RecordSet"))
        assert names == ["*", "@"]
        vm = graph.one("azure-native:compute:VirtualMachine").inputs
        assert "--certificate lets-encrypt" in base64.b64decode(vm["userData"]).decode()

    def test_nodes_join_the_gateway_by_secret_name(self, tmp_path: Path) -> None:
        graph = run(EXAMPLES / "azure", tmp_path)
        join = graph.one("azure-native:keyvault:Secret", "azure-a100-join-token")
        assert join.inputs["secretName"] == "join-token"
        vault = graph.one("azure-native:keyvault:Vault", "azure-a100")
        for vmss in graph.of_type("azure-native:compute:VirtualMachineScaleSet"):
            script = base64.b64decode(vmss.inputs["virtualMachineProfile"]["userData"]).decode()
            assert "secret azure-a100-kv/join-token /var/lib/gpustack/join.token" in script
            argv = unit_argv(script, "gpustack-agent")
            assert argv[argv.index("--controller-url") + 1] == "http://10.60.0.10:8443"
            assert argv[argv.index("--node-group") + 1] == vmss.name and "backend=azure" in argv
            assert subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30).returncode == 0
        nic = graph.one("azure-native:network:NetworkInterface").inputs["ipConfigurations"][0]
        assert nic["privateIPAllocationMethod"] == "Static" and nic["privateIPAddress"] == "10.60.0.10"
        gw_script = base64.b64decode(graph.one("azure-native:compute:VirtualMachine").inputs["userData"]).decode()
        assert "--join-token-dir /var/lib/gpustack/joins" in " ".join(unit_argv(gw_script, "gpustack-gateway"))
        refresh = unit_argv(gw_script, "gpustack-joins")
        assert refresh[refresh.index("secrets-under") + 1] == "azure-a100=azure-a100-kv/join-token"
        assert subprocess.run(["bash", "-n"], input=gw_script, capture_output=True, text=True, timeout=30).returncode == 0
        # The gateway's identity may read the fleet's vault (Key Vault Secrets User), scoped to it.
        grant = graph.one("azure-native:authorization:RoleAssignment", "azure-gateway-join-azure-a100").inputs
        assert grant["scope"] == f"{vault.name}-id"  # the fleet vault's id (the mock's id scheme)
        assert grant["roleDefinitionId"].endswith("4633458b-17de-408a-b874-0445c86b69e6")
        rules = {r["name"]: r for r in graph.one("azure-native:network:NetworkSecurityGroup", "azure-gateway").inputs["securityRules"]}
        assert rules["join"]["destinationPortRange"] == "8443" and rules["join"]["sourceAddressPrefixes"] == ["10.60.0.0/16"]
