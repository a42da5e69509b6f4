"""GCP node groups the controller really sizes: the gateway's --node-groups file names the stack's
regional MIGs, its account may resize exactly those, and `up` never resets their size
(backends/gcp/). The rehearsal (rehearsal/test_boot.py, gcp) runs the same file against a stand-in."""

from __future__ import annotations

import json
from pathlib import Path

from gpustack_iac.backends.gcp.resources import SIZER_PERMISSIONS
from gpustack_iac.runtime.controller.sizing_config import load_sizers
from tests.cloud.bootscripts import heredoc, unit_argv
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import run

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
    assert expression.split(" || ") == [
        f'resource.name == "projects/mock-project/regions/us-central1/instanceGroupManagers/{n}"' for n in migs]
