"""GCP and Azure node groups the controller really sizes: the gateway's --node-groups file names the
stack's regional MIGs / scale sets, its identity may resize exactly those, and `up` never resets
their size (backends/gcp/, backends/azure/). The boot rehearsal (rehearsal/test_boot.py) runs the
same files against the stand-in APIs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from gpustack_iac.backends.azure.resources import VM_CONTRIBUTOR_ROLE
from gpustack_iac.backends.gcp.resources import SIZER_PERMISSIONS
from gpustack_iac.runtime.controller.sizing_config import load_sizers
from tests.cloud.bootscripts import heredoc, unit_argv
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import MOCK_SUBSCRIPTION, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MIGS = {"gpustack-proj-dev-gcp-a100-spot": ("true", 0), "gpustack-proj-dev-gcp-a100-on-demand": ("false", 0)}


@need_sdk("pulumi_gcp")
def test_the_gateway_sizes_exactly_the_stacks_migs_and_up_keeps_their_size(tmp_path: Path) -> None:
    graph = run(EXAMPLES / "gcp", tmp_path)
    migs = {m.inputs["name"]: m for m in graph.of_type("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager")}
    assert set(migs) == set(MIGS)
    for mig in migs.values():
        assert mig.ignore_changes == ["targetSize"] and mig.inputs["targetSize"] == 0
    script = graph.one("gcp:compute/instance:Instance").inputs["metadataStartupScript"]
    argv = unit_argv(script, "gpustack-gateway")
    assert argv[argv.index("--node-groups") + 1] == "/var/lib/gpustack/node-groups.json"
    doc = json.loads(heredoc(script, "cat > /var/lib/gpustack/node-groups.json", "GPUSTACK_NODE_GROUPS"))
    assert (doc["kind"], doc["project"], doc["region"]) == ("gcp", "mock-project", "us-central1")
    assert "api" not in doc and "metadata" not in doc  # the cloud's own endpoints
    assert {g["name"]: (g["labels"]["spot"], g["min"]) for g in doc["groups"]} == MIGS
    assert {g["max"] for g in doc["groups"]} == {2} and {g["gpus"] for g in doc["groups"]} == {2}
    (tmp_path / "ng.json").write_text(json.dumps(doc))
    assert len(load_sizers(tmp_path / "ng.json")) == 1  # the gateway's own loader takes it
    # A custom role with the two permissions the calls need, bound under a condition naming each MIG.
    role = graph.one("gcp:projects/iAMCustomRole:IAMCustomRole")
    assert tuple(role.inputs["permissions"]) == SIZER_PERMISSIONS
    member = graph.one("gcp:projects/iAMMember:IAMMember")
    assert member.inputs["member"].startswith("serviceAccount:") and "gcp-gateway-gw" in member.inputs["member"]
    expression = member.inputs["condition"]["expression"]
    assert sorted(expression.split(" || ")) == sorted(
        f'resource.name == "projects/mock-project/regions/us-central1/instanceGroupManagers/{n}"' for n in migs)


@need_sdk("pulumi_azure_native")
def test_the_azure_gateway_sizes_exactly_the_stacks_scale_sets_and_up_keeps_their_capacity(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARM_TENANT_ID", "11111111-2222-3333-4444-555555555555")
    graph = run(EXAMPLES / "azure", tmp_path)
    [vmss] = graph.of_type("azure-native:compute:VirtualMachineScaleSet")
    assert vmss.inputs["vmScaleSetName"] == "azure-a100" and vmss.ignore_changes == ["sku.capacity"]
    assert vmss.inputs["sku"]["capacity"] == 1
    gw = graph.one("azure-native:compute:VirtualMachine")
    script = base64.b64decode(gw.inputs["userData"]).decode()
    doc = json.loads(heredoc(script, "cat > /var/lib/gpustack/node-groups.json", "GPUSTACK_NODE_GROUPS"))
    assert (doc["kind"], doc["subscription"]) == ("azure", MOCK_SUBSCRIPTION)
    assert doc["resource_group"].endswith("-rg") and doc["identity"].startswith("client-")
    assert [(g["name"], g["min"], g["max"], g["gpus"]) for g in doc["groups"]] == [("azure-a100", 1, 3, 2)]
    (tmp_path / "ng.json").write_text(json.dumps(doc))
    assert len(load_sizers(tmp_path / "ng.json")) == 1
    # "Virtual Machine Contributor" on that scale set only, for the gateway's identity.
    [grant] = [r for r in graph.of_type("azure-native:authorization:RoleAssignment")
               if r.inputs["roleDefinitionId"] == VM_CONTRIBUTOR_ROLE]
    assert grant.inputs["scope"] == "azure-a100-id" and grant.name == "azure-gateway-size-azure-a100"
