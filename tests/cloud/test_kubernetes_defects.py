"""Kubernetes defects a review of the plan found (issue 18): scheduling on a plain cluster, the
GPU-memory rule, securityContext, and the controller's state on a volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import run

pytestmark = need_sdk("pulumi_kubernetes")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
# What GPU feature discovery reports as nvidia.com/gpu.memory (MiB) for GPUs sold as these sizes.
REPORTED_MIB = {"T4 16GB": (16, 15360), "A10G 24GB": (24, 23028), "L4 24GB": (24, 23034), "H100 80GB": (80, 81559),
                "A100 80GB": (80, 81920)}


@pytest.mark.parametrize("gpu", sorted(REPORTED_MIB))
def test_the_gpu_memory_rule_admits_the_gpus_sold_at_that_size(gpu: str) -> None:
    from gpustack_iac.backends.kubernetes.resources import _gpu_scheduling

    nominal_gb, reported = REPORTED_MIB[gpu]
    _, affinity, _ = _gpu_scheduling({"count": {"min": 1}, "memory_bytes": {"min": nominal_gb * 2**30}})
    assert affinity is not None
    [term] = affinity["node_affinity"]["required_during_scheduling_ignored_during_execution"]["node_selector_terms"]
    [rule] = term["match_expressions"]
    assert rule["operator"] == "Gt" and reported > int(rule["values"][0])


def test_a_plain_gpu_count_needs_only_the_device_plugin(tmp_path: Path) -> None:
    graph = run(EXAMPLE, tmp_path)
    spec = graph.one("kubernetes:apps/v1:Deployment", "embeddings-default").inputs["spec"]["template"]["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1"} and resources["requests"]["nvidia.com/gpu"] == "1"
    assert "affinity" not in spec and "nodeSelector" not in spec  # schedulable on any cluster with the plugin


def test_pods_drop_privileges_and_the_gateway_runs_as_non_root_read_only(tmp_path: Path) -> None:
    graph = run(EXAMPLE, tmp_path)
    replica = graph.one("kubernetes:apps/v1:Deployment", "embeddings-default").inputs["spec"]["template"]["spec"]
    assert replica["automountServiceAccountToken"] is False
    assert replica["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert replica["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    gateway = graph.one("kubernetes:apps/v1:Deployment", "k8s-gateway-gateway").inputs["spec"]["template"]["spec"]
    assert gateway["securityContext"]["runAsNonRoot"] is True and gateway["securityContext"]["runAsUser"] == 10001
    container = gateway["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True and container["allowPrivilegeEscalation"] is False
    # fsGroup makes the Secret's files group-readable, which the runtime refuses for a token file:
    # an init container copies them owner-only into a memory volume the gateway reads.
    [init] = gateway["initContainers"]
    assert init["image"] == gateway["containers"][0]["image"] and init["securityContext"] == container
    assert "--token-file" in gateway["containers"][0]["command"]
    assert gateway["containers"][0]["command"][gateway["containers"][0]["command"].index("--token-file") + 1] == "/run/gpustack/token"


def test_controller_state_is_on_a_persistent_volume_claim(tmp_path: Path) -> None:
    graph = run(EXAMPLE, tmp_path)
    claim = graph.one("kubernetes:core/v1:PersistentVolumeClaim", "k8s-gateway-gateway-state").inputs
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    spec = graph.one("kubernetes:apps/v1:Deployment", "k8s-gateway-gateway").inputs["spec"]
    assert spec["strategy"] == {"type": "Recreate"}  # one pod holds the claim at a time
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "k8s-gateway-gateway-state"
    mounts = {m["name"]: m["mountPath"] for m in spec["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["state"] == "/var/lib/gpustack"


def test_gpu_names_on_kubernetes_warn_that_they_need_feature_discovery_labels(tmp_path: Path) -> None:
    from tests.cloud.mockstack import compile_dir, write
    from tests.cloud.test_kubernetes_graph import GATEWAY, SERVICE

    compiled = compile_dir(write(tmp_path, {"s.gpustack.yml": SERVICE, "g.gpustack.yml": GATEWAY}), tmp_path)
    assert any("group big: GPU names or memory on kubernetes" in w and "GPU feature discovery" in w for w in compiled.warnings)
    assert not any("group default" in w for w in compile_dir(EXAMPLE, tmp_path).warnings)  # a count alone: no warning


def test_plan_warns_that_kubernetes_services_do_not_autoscale_yet(tmp_path: Path) -> None:
    """Services are not registered with the in-cluster controller: its autoscaler never sees them,
    so `scaling` is a warning naming the property and the backend, not a silent fixed size."""
    from tests.cloud.mockstack import compile_dir

    warnings = compile_dir(EXAMPLE, tmp_path).warnings
    assert any("scaling" in w and "kubernetes" in w for w in warnings), warnings
