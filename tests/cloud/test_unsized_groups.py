"""`plan` says out loud when nothing will size a fleet's node groups (compile/group_sizing.py).

Capability-driven: each test sets `sizes_node_groups` on the backend it plans for, so the rule is
checked whichever backends size their groups in this version. Through `plan` itself (the CLI,
embedded engine): the refusal stops at the checks, before any resource is declared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpustack_iac.backends import get
from gpustack_iac.cli import main
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import write

FLEET = "type: fleet\nname: pool\nbackends: [gcp]\nregions: [us-central1]\nnodes: {nodes}\nspot_policy: on-demand\nresources:\n  gpu: L4:1\n"
SERVICE = ("type: service\nname: llm\ngateway: gw\nport: 8000\nimage: vllm/vllm-openai:latest\ncommands: [vllm serve m]\n"
           "backends: [gcp]\nregions: [us-central1]\nreplicas: {replicas}\nscaling: {{metric: rps, target: 4}}\n"
           "resources:\n  gpu: L4:1\n")
GATEWAY = "type: gateway\nname: gw\nbackend: gcp\nregion: {region}\ncertificate: null\n"


def _plan(tmp_path: Path, nodes: str, replicas: str, gateway_region: str = "us-central1") -> tuple[int, str]:
    need_sdk("pulumi_gcp")
    if shutil.which("pulumi"):
        pytest.skip("a pulumi CLI is on PATH: the auto engine would use it")
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf, {"f.gpustack.yml": FLEET.format(nodes=nodes), "s.gpustack.yml": SERVICE.format(replicas=replicas),
                 "g.gpustack.yml": GATEWAY.format(region=gateway_region)})
    result = CliRunner().invoke(main, ["plan", str(conf), "--state-dir", str(tmp_path / "state"), "--format", "json"],
                                env={"GPUSTACK_PASSPHRASE": "p"})
    return result.exit_code, result.output


@pytest.fixture
def unsized(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(get("gcp")), "sizes_node_groups", False)


def test_a_service_only_unsized_fleets_at_zero_could_serve_is_refused(tmp_path: Path, unsized: None) -> None:
    code, out = _plan(tmp_path, "0..2", "0..2")
    assert code != 0
    assert "s.gpustack.yml:9:1: replicas: service llm group default: replicas 0..2 can never be placed" in out
    assert "fleets pool (gcp) have nodes min 0" in out and "sizes_node_groups" in out
    assert "Traceback" not in out


def test_a_range_on_an_unsized_fleet_is_warned_about_naming_fleet_backend_and_nodes(tmp_path: Path, unsized: None) -> None:
    code, out = _plan(tmp_path, "1..3", "1..3")
    assert code == 0, out
    [warning] = [w for w in json.loads(out)["warnings"] if "sizes_node_groups" in w]
    assert warning.startswith("fleet pool: nodes 1..3 on gcp: the gcp backend does not size node groups")
    assert "stays at its minimum of 1 node(s)" in warning


def test_a_backend_that_sizes_its_groups_plans_the_same_fleet_without_a_word(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(get("gcp")), "sizes_node_groups", True)
    code, out = _plan(tmp_path, "0..2", "0..2")
    assert code == 0, out
    assert not [w for w in json.loads(out)["warnings"] if "sizes_node_groups" in w]


def test_a_sizing_backend_without_a_gateway_in_the_fleets_region_is_refused_too(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller of a gateway of the fleet's backend and region sizes its groups; with the only
    gateway elsewhere, nothing grows the fleet from 0."""
    monkeypatch.setattr(type(get("gcp")), "sizes_node_groups", True)
    code, out = _plan(tmp_path, "0..2", "0..2", gateway_region="europe-west4")
    assert code != 0
    assert "replicas 0..2 can never be placed: its fleets pool (gcp) have nodes min 0 and no gcp gateway in us-central1" in out
