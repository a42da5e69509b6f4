"""The Kubernetes stack as a resource graph under Pulumi mocks."""

from __future__ import annotations

import json

from pathlib import Path

from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import run, write

pytestmark = need_sdk("pulumi_kubernetes")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"

SERVICE = """type: service
name: llm
gateway: gw
port: 8000
image: vllm/vllm-openai:latest
commands: [vllm serve m --port 8000]
env: [HF_TOKEN=hf_secret_value_123]
probes:
  - url: /health
    interval: 20
    timeout: 5
replica_groups:
  - name: big
    replicas: 1..4
    scaling: {metric: rps, target: 5}
    resources: {gpu: A100:80GB:2}
  - name: amd
    replicas: 0..2
    scaling: {metric: rps, target: 5}
    resources: {gpu: "amd:MI300X:1"}
"""
GATEWAY = "type: gateway\nname: gw\nbackend: kubernetes\ncertificate: null\n"


def _deployments(tmp_path: Path) -> dict[str, dict]:
    graph = run(write(tmp_path, {"s.gpustack.yml": SERVICE, "g.gpustack.yml": GATEWAY}), tmp_path)
    return {d.name: d for d in graph.of_type("kubernetes:apps/v1:Deployment")}, graph  # type: ignore[return-value]


def test_gpu_limits_node_selection_and_tolerations(tmp_path: Path) -> None:
    deployments, _ = _deployments(tmp_path)
    big = deployments["llm-big"].inputs["spec"]["template"]["spec"]
    assert big["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert big["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"  # the device plugin schedules it
    terms = big["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    by_key = {t["key"]: t for t in terms}
    assert "nvidia.com/gpu.present" not in by_key  # a label only the GPU Operator sets: not required
    assert "NVIDIA-A100-SXM4-80GB" in by_key["nvidia.com/gpu.product"]["values"]
    assert by_key["nvidia.com/gpu.memory"] == {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["73727"]}
    assert big["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    amd = deployments["llm-amd"].inputs["spec"]["template"]["spec"]
    assert amd["containers"][0]["resources"]["limits"] == {"amd.com/gpu": "1"}
    assert amd["tolerations"][0]["key"] == "amd.com/gpu"


def test_probes_rollout_and_replicas_owned_by_the_autoscaler(tmp_path: Path) -> None:
    deployments, _ = _deployments(tmp_path)
    for name, minimum in (("llm-big", 1), ("llm-amd", 0)):
        dep = deployments[name]
        assert dep.ignore_changes == ["spec.replicas"]
        spec = dep.inputs["spec"]
        assert spec["replicas"] == minimum
        assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        probe = spec["template"]["spec"]["containers"][0]["readinessProbe"]
        assert probe["httpGet"] == {"path": "/health", "port": 8000}
        assert probe["periodSeconds"] == 20 and probe["timeoutSeconds"] == 5


def test_env_goes_through_a_secret_and_rbac_scales_exactly_these_deployments(tmp_path: Path) -> None:
    deployments, graph = _deployments(tmp_path)
    container = deployments["llm-big"].inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "llm-big-env"}}]
    assert "hf_secret_value_123" not in str(deployments["llm-big"].inputs)
    role = graph.one("kubernetes:rbac.authorization.k8s.io/v1:Role").inputs["rules"]
    assert role == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["llm-big", "llm-amd"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["llm-big", "llm-amd"],
         "verbs": ["get", "patch", "update"]},
    ]
    lb = graph.one("kubernetes:core/v1:Service", "gw-gateway").inputs["spec"]
    assert lb["type"] == "LoadBalancer"
    svc = graph.one("kubernetes:core/v1:Service", "llm").inputs["spec"]
    assert svc["selector"] == {"gpustack.io/service": "llm"} and svc["ports"][0]["port"] == 8000
    gw = deployments["gw-gateway"].inputs["spec"]["template"]["spec"]
    assert gw["volumes"][0]["secret"]["defaultMode"] == 0o400
    # The controller sizes exactly these Deployments: a ConfigMap hands them to --node-groups.
    command = gw["containers"][0]["command"]
    assert command[command.index("--node-groups") + 1] == "/etc/gpustack-sizing/node-groups.json"
    assert {"name": "node-groups", "mountPath": "/etc/gpustack-sizing", "readOnly": True} in gw["containers"][0]["volumeMounts"]
    sizing = json.loads(graph.one("kubernetes:core/v1:ConfigMap", "gw-gateway-node-groups").inputs["data"]["node-groups.json"])
    assert sizing == {"kind": "kubernetes", "namespace": "proj-dev", "deployments": [
        {"service": "llm", "group": "big", "name": "llm-big"}, {"service": "llm", "group": "amd", "name": "llm-amd"}]}


def test_the_example_plans_under_mocks(tmp_path: Path) -> None:
    graph = run(EXAMPLE, tmp_path)
    assert {d.name for d in graph.of_type("kubernetes:apps/v1:Deployment")} == {"embeddings-default", "k8s-gateway-gateway"}
    assert graph.one("kubernetes:core/v1:Namespace").inputs["metadata"]["name"] == "proj-dev"
