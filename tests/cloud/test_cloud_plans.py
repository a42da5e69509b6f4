"""`plan` on the cloud examples runs offline with the embedded engine and shows resources and cost;
`up` without the Pulumi CLI stops in one line; placement and cost decisions at compile time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpustack_iac.cli import main
from gpustack_iac.cost import deployed_cost
from gpustack_iac.errors import ConfigError
from gpustack_iac.providers.runtime_bundle import CACHE_ENV
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import Fleet
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import compile_dir, write

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "aws": ("aws:autoscaling/group:Group", "+$0.04/h at min, up to +$4.07/h"),
    "gcp": ("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "+$0.03/h at min, up to +$20.31/h"),
    "azure": ("azure-native:compute:VirtualMachineScaleSet", "+$7.39/h at min, up to +$22.08/h"),
    "kubernetes": ("kubernetes:apps/v1:Deployment", "kubernetes capacity not priced"),
}
SDKS = {"aws": "pulumi_aws", "gcp": "pulumi_gcp", "azure": "pulumi_azure_native", "kubernetes": "pulumi_kubernetes"}


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_plan_runs_offline_and_shows_the_cost(example: str, tmp_path: Path) -> None:
    need_sdk(SDKS[example])  # raises in CI when missing
    if shutil.which("pulumi"):
        pytest.skip("a pulumi CLI is on PATH: the auto engine would use it")
    runner = CliRunner()
    # Azure's Key Vault trusts a tenant: configured (as here), or looked up by the Pulumi CLI.
    env = {"GPUSTACK_PASSPHRASE": "p", **({"ARM_TENANT_ID": "11111111-2222-3333-4444-555555555555"} if example == "azure" else {})}
    result = runner.invoke(main, ["plan", str(EXAMPLES / example), "--state-dir", str(tmp_path / "state"), "--format", "json"],
                           env=env)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["engine"] == "embedded"
    resource_type, line = EXPECTED[example]
    assert any(s["type"] == resource_type and s["op"] == "create" for s in plan["steps"])
    assert line in plan["cost"]["line"]
    terminal = runner.invoke(main, ["plan", str(EXAMPLES / example), "--state-dir", str(tmp_path / "state")],
                             env={**env, "COLUMNS": "400"})
    assert terminal.exit_code == 0
    assert f"Cost: {plan['cost']['line']}" in terminal.output and "Cost (per hour)" in terminal.output


def test_up_without_the_pulumi_cli_fails_in_one_line(tmp_path: Path) -> None:
    need_sdk("pulumi_aws")
    done = subprocess.run([sys.executable, "-m", "gpustack_iac", "up", str(EXAMPLES / "aws"), "--yes", "--engine", "embedded",
                           "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=120,
                          # The seeded cloud runtime cache (tests/conftest.py): compiling builds no wheelhouse.
                          env={"PATH": "/usr/bin:/bin", "GPUSTACK_PASSPHRASE": "p", CACHE_ENV: os.environ[CACHE_ENV]})
    assert done.returncode == 1
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "needs the Pulumi CLI" in done.stderr and "https://www.pulumi.com/docs/install/" in done.stderr
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.json"))


def test_local_plan_says_local_costs_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", str(EXAMPLES / "local"), "--state-dir", str(tmp_path / "s"), "--format", "json"],
                                env={"GPUSTACK_PASSPHRASE": "p"})
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["cost"]
    assert cost["total"] == {"min_hourly": 0.0, "max_hourly": 0.0}
    assert cost["line"].endswith("local and SSH capacity costs $0")
    assert {i["backend"] for i in cost["items"]} == {"local"}


FLEET = "type: fleet\nname: pool\nbackends: [aws]\nregions: [us-east-1]\nnodes: {nodes}\nspot_policy: on-demand\nresources:\n  gpu: A10G:1\n"


def test_cost_change_against_the_deployed_specs(tmp_path: Path) -> None:
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir(), new_dir.mkdir()
    write(old_dir, {"f.gpustack.yml": FLEET.format(nodes="1..2")})
    write(new_dir, {"f.gpustack.yml": FLEET.format(nodes="2..6")})
    from gpustack_iac.spec.loader import load_paths

    old_fleet = load_paths([old_dir], {}).fleets[0]
    ctx = StackContext(project="proj", stack="dev", state_root=tmp_path)
    deployed = deployed_cost({("fleet", "pool"): Fleet.spec_of(old_fleet, ctx)})
    cost = compile_dir(new_dir, tmp_path).cost.to_json(deployed)
    # g5.xlarge on-demand $1.006/h: 1..2 nodes deployed, 2..6 planned.
    assert cost["deployed"] == {"min_hourly": 1.006, "max_hourly": 2.012}
    assert cost["total"] == {"min_hourly": 2.012, "max_hourly": 6.036}
    assert cost["change"] == {"min_hourly": 1.006, "max_hourly": 4.024}
    assert cost["line"].startswith("+$1.01/h at min, up to +$4.02/h")


SERVICE = """type: service
name: mixed
gateway: gw
port: 8000
image: vllm/vllm-openai:latest
commands: [vllm serve m]
replica_groups:
  - name: east
    backends: [aws]
    regions: [us-east-1]
    replicas: 1..2
    scaling: {metric: rps, target: 5}
    resources: {gpu: A10G:1}
  - name: central
    backends: [gcp]
    regions: [us-central1]
    replicas: 0..2
    scaling: {metric: rps, target: 5}
    max_price: %s
    resources: {gpu: L4:1}
"""
GATEWAY = "type: gateway\nname: gw\nbackend: aws\nregion: us-east-1\ncertificate: null\n"


def test_groups_on_different_backends_compile_into_one_stack_with_a_cost_each(tmp_path: Path) -> None:
    write(tmp_path, {"s.gpustack.yml": SERVICE % "1.0", "g.gpustack.yml": GATEWAY})
    cost = compile_dir(tmp_path, tmp_path).cost
    groups = {i.name: i for i in cost.items if i.kind == "group"}
    assert (groups["mixed/east"].backend, groups["mixed/east"].instance_type) == ("aws", "g5.xlarge")
    assert (groups["mixed/central"].backend, groups["mixed/central"].instance_type) == ("gcp", "g2-standard-4")


def test_max_price_leaving_a_group_without_offer_is_an_error_naming_it(tmp_path: Path) -> None:
    write(tmp_path, {"s.gpustack.yml": SERVICE % "0.5", "g.gpustack.yml": GATEWAY})
    with pytest.raises(ConfigError) as caught:
        compile_dir(tmp_path, tmp_path)
    [diag] = caught.value.diagnostics
    assert "service mixed group central" in diag.message and "max_price $0.5/h" in diag.message


def test_ci_comment_sample_is_what_the_renderer_writes_for_the_aws_example(tmp_path: Path) -> None:
    need_sdk("pulumi_aws")
    result = CliRunner().invoke(main, ["plan", str(EXAMPLES / "aws"), "--state-dir", str(tmp_path / "s"), "--format", "markdown"],
                                env={"GPUSTACK_PASSPHRASE": "p"})
    assert result.exit_code == 0, result.output
    rendered = result.stdout.splitlines()
    sample = (EXAMPLES / "ci" / "plan-comment.md").read_text().splitlines()
    # The summary, then the cost line, exactly as committed in the sample.
    assert rendered[:6] == sample[:6]
    assert sample[5] == "💰 **Cost:** +$0.04/h at min, up to +$4.07/h (total $0.04/h at min, up to $4.07/h)"
    start = rendered.index("<details><summary>Cost breakdown</summary>")
    assert rendered[start:start + 11] == sample[sample.index("<details><summary>Cost breakdown</summary>"):][:11]


CPU_SERVICE = """type: service
name: api
gateway: gw
port: 8000
image: python:3.12-slim
commands: [python3 -m http.server 8000]
backends: [%s]
regions: [%s]
resources: {cpu: 2.., memory: 4GB..}
"""
CPU_TYPES = {"aws": ("eu-west-1", "c7i.large"), "gcp": ("europe-west4", "e2-standard-2"),
             "azure": ("westeurope", "Standard_F2s_v2")}


@pytest.mark.parametrize("cloud", sorted(CPU_TYPES))
def test_a_cpu_only_service_plans_on_each_cloud(cloud: str, tmp_path: Path) -> None:
    """The catalog has CPU-only families: a service without GPUs finds a node on every cloud."""
    region, cheapest = CPU_TYPES[cloud]
    gateway = f"type: gateway\nname: gw\nbackend: {cloud}\nregion: {region}\ncertificate: null\n"
    write(tmp_path, {"s.gpustack.yml": CPU_SERVICE % (cloud, region), "g.gpustack.yml": gateway})
    cost = compile_dir(tmp_path, tmp_path).cost
    [group] = [i for i in cost.items if i.kind == "group"]
    assert (group.backend, group.instance_type) == (cloud, cheapest)
