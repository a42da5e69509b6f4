"""dstack's current syntax for features the project has, with the older forms kept."""

from __future__ import annotations

import pytest

from gpustack_iac.errors import ConfigError
from gpustack_iac.spec.loader import load_text

SERVICE = "type: service\nname: web\nport: 8000\ncommands: [python3 app.py]\n"


def test_replicas_list_with_count_and_optional_name() -> None:
    spec = load_text(SERVICE + "scaling: {metric: rps, target: 5}\nreplicas:\n  - name: base\n    count: 2\n  - count: 0..3\n")
    groups = spec.services[0].groups
    assert [(g.name, str(g.replicas)) for g in groups] == [("base", "2"), ("group-1", "0..3")]


def test_old_replica_groups_form_still_works() -> None:
    spec = load_text(SERVICE + "replica_groups:\n  - name: a\n    replicas: 1\n")
    assert [(g.name, str(g.replicas)) for g in spec.services[0].groups] == [("a", "1")]


def test_count_and_replicas_together_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(SERVICE + "replicas:\n  - count: 1\n    replicas: 2\n")
    assert "count and replicas are the same property" in str(caught.value)


def test_dev_environment_without_ide_is_ssh_only() -> None:
    spec = load_text("type: dev-environment\nname: box\n")
    assert spec.dev_environments[0].ide is None


def test_fleet_nodes_object_with_target() -> None:
    spec = load_text("type: fleet\nname: f\nbackends: [local]\nnodes: {min: 1, target: 2, max: 3}\n")
    fleet = spec.fleets[0]
    assert (fleet.nodes.min, fleet.nodes.max, fleet.nodes_target) == (1, 3, 2)
    from gpustack_iac.stacks.fleet import local_host_names

    assert [n for n, _ in local_host_names(fleet)] == ["f-0", "f-1"]


def test_fleet_nodes_target_outside_the_range_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text("type: fleet\nname: f\nbackends: [local]\nnodes: {min: 1, target: 5, max: 3}\n")
    [diag] = caught.value.diagnostics
    assert "nodes.target 5 is outside nodes 1..3" in diag.message


@pytest.mark.parametrize("value, arch, count", [("x86:96..", "x86", "96.."), ("arm:8", "arm", "8"), ("4..", None, "4..")])
def test_cpu_architecture_shorthand(value: str, arch: str | None, count: str) -> None:
    spec = load_text(SERVICE + f"resources: {{cpu: '{value}'}}\n")
    resources = spec.services[0].resources
    assert resources.cpu_arch == arch and str(resources.cpu) == count
    assert resources.describe().startswith(f"cpu={value}")


def test_cpu_object_form_and_bad_arch() -> None:
    spec = load_text(SERVICE + "resources: {cpu: {arch: arm, count: 8..}}\n")
    assert spec.services[0].resources.cpu_arch == "arm"
    with pytest.raises(ConfigError) as caught:
        load_text(SERVICE + "resources: {cpu: 'mips:8'}\n")
    assert "expected a CPU architecture x86 or arm" in str(caught.value)


def test_newer_dstack_backends_validate() -> None:
    spec = load_text("type: fleet\nname: f\nbackends: [crusoe]\nnodes: 1\n")
    assert spec.fleets[0].backends == ["crusoe"]
    with pytest.raises(ConfigError) as caught:
        load_text("type: fleet\nname: f\nbackends: [crusoee]\nnodes: 1\n")
    assert "unknown backend 'crusoee'" in str(caught.value)
