"""Kubernetes resources for services and a gateway, declared with pulumi-kubernetes.

Every replica group is a Deployment (the autoscaler owns `spec.replicas`; Pulumi ignores it), every
service a ClusterIP Service, and the gateway with its controller a Deployment behind a LoadBalancer
Service. The controller's ServiceAccount may read and scale exactly the groups' Deployments.
Inputs are the controller's service definitions (plain dictionaries), as for the local backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from gpustack_iac.backends.cloud import CloudGateway
from gpustack_iac.backends.kubernetes.names import k8s_name

RUNTIME_UID = 10001  # the runtime image's user (Containerfile)
TOKENS = "/run/gpustack"
# Run by the gateway pod's init container (and by tests/cloud/test_runtime_image.py the same way).
COPY_TOKENS = ("import os, pathlib\n"
               "for f in pathlib.Path('/etc/gpustack-secret').iterdir():\n"
               "    if f.name.startswith('.'): continue\n"
               "    fd = os.open(f'/run/gpustack/{f.name}', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
               "    os.write(fd, f.read_bytes()); os.close(fd)\n")
_RESTRICTED = {"read_only_root_filesystem": True, "allow_privilege_escalation": False, "capabilities": {"drop": ["ALL"]}}
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}
# GPU feature discovery (NVIDIA's GFD) labels each node with its product; a spec names the family.
GFD_PRODUCTS: dict[str, list[str]] = {
    "T4": ["Tesla-T4"],
    "A10": ["NVIDIA-A10"],
    "A10G": ["NVIDIA-A10G"],
    "L4": ["NVIDIA-L4"],
    "L40S": ["NVIDIA-L40S"],
    "A100": ["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-PCIE-40GB", "NVIDIA-A100-80GB-PCIe"],
    "H100": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"],
    "H100NVL": ["NVIDIA-H100-NVL"],
    "H200": ["NVIDIA-H200"],
}


def group_labels(service: str, group: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "gpustack-iac", "gpustack.io/service": service, "gpustack.io/group": group}


# A GPU's usable memory as GFD reports it (MiB) is below its nominal size: 15360 for a 16 GB T4,
# 23028 for a 24 GB A10G, 81559 for an 80 GB H100. A requirement matches down to this share of it.
GPU_MEMORY_MARGIN = 0.9


def _gpu_scheduling(gpu: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, Any] | None, list[dict[str, Any]]]:
    """(requests = limits, node affinity, tolerations) for a group's GPU request.

    The device plugin's resource (`nvidia.com/gpu`) is what schedules a GPU pod on any cluster with
    the plugin. Node labels are required only for what the configuration asks beyond a count: GPU
    names and memory (labels GPU feature discovery sets; plan warns that they need it)."""
    if not gpu:
        return {}, None, []
    vendor = gpu.get("vendor") or "nvidia"
    count = gpu["count"]["min"] or 1
    limits = {GPU_RESOURCE.get(vendor, "nvidia.com/gpu"): str(count)}
    terms: list[dict[str, Any]] = []
    if vendor == "nvidia":
        products = [p for n in gpu.get("names") or [] for p in GFD_PRODUCTS.get(n.upper(), [f"NVIDIA-{n.upper()}"])]
        if products:
            terms.append({"key": "nvidia.com/gpu.product", "operator": "In", "values": products})
        min_mem = (gpu.get("memory_bytes") or {}).get("min") or 0
        if min_mem:
            # "Gt" is strict: one below the smallest reported size that still counts.
            floor = int(min_mem / 2**20 * GPU_MEMORY_MARGIN)
            terms.append({"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(floor - 1)]})
    affinity = {"node_affinity": {"required_during_scheduling_ignored_during_execution": {
        "node_selector_terms": [{"match_expressions": terms}]}}} if terms else None
    tolerations = [{"key": GPU_RESOURCE.get(vendor, "nvidia.com/gpu"), "operator": "Exists", "effect": "NoSchedule"}]
    return limits, affinity, tolerations


def _probe(probe: dict[str, Any] | None, port: int) -> dict[str, Any]:
    if not probe:
        return {"tcp_socket": {"port": port}, "period_seconds": 10}
    return {"http_get": {"path": probe["url"], "port": port,
                         "http_headers": [{"name": k, "value": v} for k, v in probe.get("headers", {}).items()] or None},
            "period_seconds": int(probe["interval"]), "timeout_seconds": int(probe["timeout"]), "failure_threshold": 3}


def _quantity(n_bytes: int) -> str:
    return f"{n_bytes // 2**20}Mi"


@dataclass
class K8sService:
    deployments: list[k8s.apps.v1.Deployment]
    service: k8s.core.v1.Service


def service(definition: dict[str, Any], namespace: pulumi.Input[str], parent: pulumi.Resource,
            provider: pulumi.ProviderResource | None) -> K8sService:
    name = definition["name"]
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    port = int(definition["port"])
    deployments = []
    for group in definition["groups"]:
        env_name = k8s_name(name, group["name"], "env")
        secret = None
        if group.get("env"):
            # Values may be secrets (HF_TOKEN): kept in a Secret the pod reads, never in the pod spec.
            secret = k8s.core.v1.Secret(env_name, metadata={"name": env_name, "namespace": namespace},
                                        string_data={k: pulumi.Output.secret(v) for k, v in group["env"].items()},
                                        type="Opaque", opts=opts)
        res = group.get("resources") or {}
        limits, affinity, tolerations = _gpu_scheduling(res.get("gpu"))
        # Extended resources (GPUs) must be requested exactly as limited.
        requests = {"cpu": str(res.get("cpu", {}).get("min") or 1), "memory": _quantity(res.get("memory_bytes", {}).get("min") or 2**30),
                    **limits}
        labels = group_labels(name, group["name"])
        container: dict[str, Any] = {
            "name": "replica", "image": group.get("image") or "python:3.11-slim",
            "ports": [{"container_port": port, "name": "http"}],
            "env": [{"name": "PORT", "value": str(port)}],
            "resources": {"requests": requests, "limits": limits or None},
            "readiness_probe": _probe(definition.get("probe"), port),
            # Images choose their own user (most serving images run as root), so non-root cannot be
            # forced here; nothing a replica needs is lost by dropping the rest.
            "security_context": {"allow_privilege_escalation": False, "capabilities": {"drop": ["ALL"]}},
        }
        if group.get("commands"):
            container["command"] = ["/bin/sh", "-c", " && ".join(group["commands"])]
        if secret is not None:
            container["env_from"] = [{"secret_ref": {"name": env_name}}]
        deployments.append(k8s.apps.v1.Deployment(
            k8s_name(name, group["name"]),
            metadata={"name": k8s_name(name, group["name"]), "namespace": namespace, "labels": labels},
            spec={
                "replicas": group["replicas"]["min"],
                "selector": {"match_labels": labels},
                "strategy": {"type": "RollingUpdate", "rolling_update": {"max_surge": 1, "max_unavailable": 0}},
                "template": {"metadata": {"labels": labels, "annotations": {"gpustack.io/generation": group["generation"]}},
                             "spec": {"containers": [container], "affinity": affinity, "tolerations": tolerations or None,
                                      # A replica needs no Kubernetes API access.
                                      "automount_service_account_token": False,
                                      "security_context": {"seccomp_profile": {"type": "RuntimeDefault"}}}},
            },
            # The autoscaler owns the replica count; a later `up` must not reset it.
            opts=pulumi.ResourceOptions(parent=parent, provider=provider, ignore_changes=["spec.replicas"])))
    svc = k8s.core.v1.Service(
        k8s_name(name), metadata={"name": k8s_name(name), "namespace": namespace, "labels": {"gpustack.io/service": name}},
        spec={"selector": {"gpustack.io/service": name}, "ports": [{"name": "http", "port": port, "target_port": port}]},
        opts=opts)
    return K8sService(deployments=deployments, service=svc)


def namespace(name: str, parent: pulumi.Resource, provider: pulumi.ProviderResource | None) -> k8s.core.v1.Namespace:
    return k8s.core.v1.Namespace(name, metadata={"name": k8s_name(name)}, opts=pulumi.ResourceOptions(parent=parent, provider=provider))


def gateway(name: str, ns: pulumi.Input[str], token: pulumi.Output[str], admin_token: pulumi.Output[str],
            scaled: list[tuple[str, str, str]], domain: str | None, parent: pulumi.Resource,
            provider: pulumi.ProviderResource | None, image: str) -> CloudGateway:
    """The gateway + controller Deployment, its LoadBalancer Service, its tokens and its RBAC.

    `scaled` lists (service, group, Deployment) of the groups the controller sizes: RBAC names the
    Deployments one by one, and a ConfigMap hands the list to the gateway as `--node-groups`."""
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    names = [name for _, _, name in scaled]
    gw = k8s_name(name, "gateway")
    secret = k8s.core.v1.Secret(gw, metadata={"name": gw, "namespace": ns}, type="Opaque",
                                string_data={"token": token, "admin-token": admin_token}, opts=opts)
    account = k8s.core.v1.ServiceAccount(gw, metadata={"name": gw, "namespace": ns}, opts=opts)
    rules: list[dict[str, Any]] = []
    if scaled:
        rules = [{"api_groups": ["apps"], "resources": ["deployments"], "resource_names": names, "verbs": ["get"]},
                 {"api_groups": ["apps"], "resources": ["deployments/scale"], "resource_names": names,
                  "verbs": ["get", "patch", "update"]}]
    role = k8s.rbac.v1.Role(gw, metadata={"name": gw, "namespace": ns}, rules=rules, opts=opts)
    k8s.rbac.v1.RoleBinding(gw, metadata={"name": gw, "namespace": ns},
                            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata["name"]},
                            subjects=[{"kind": "ServiceAccount", "name": account.metadata["name"], "namespace": ns}], opts=opts)
    args = ["--host", "0.0.0.0", "--port", "8080", "--control-port", "8443", "--token-file", f"{TOKENS}/token",
            "--admin-token-file", f"{TOKENS}/admin-token", "--state-dir", "/var/lib/gpustack"]
    if domain:
        args += ["--domain", domain]
    volumes: list[dict[str, Any]] = [{"name": "secret", "secret": {"secret_name": secret.metadata["name"], "default_mode": 0o400}},
                                     {"name": "tokens", "empty_dir": {"medium": "Memory", "size_limit": "1Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tokens", "mount_path": TOKENS, "read_only": True}]
    if scaled:
        # The controller sets each group's Deployment to the autoscaler's count (runtime/controller/node_sizing.py).
        sizing = k8s.core.v1.ConfigMap(f"{gw}-node-groups", metadata={"name": f"{gw}-node-groups", "namespace": ns},
                                       data={"node-groups.json": pulumi.Output.from_input(ns).apply(
                                           lambda n: json.dumps({"kind": "kubernetes", "namespace": n, "deployments": [
                                               {"service": s, "group": g, "name": d} for s, g, d in scaled]}, sort_keys=True))},
                                       opts=opts)
        volumes.append({"name": "node-groups", "config_map": {"name": sizing.metadata["name"]}})
        mounts.append({"name": "node-groups", "mount_path": "/etc/gpustack-sizing", "read_only": True})
        args += ["--node-groups", "/etc/gpustack-sizing/node-groups.json"]
    # The controller's state (SQLite) outlives the pod: a restart keeps every registration.
    state = k8s.core.v1.PersistentVolumeClaim(f"{gw}-state", metadata={"name": f"{gw}-state", "namespace": ns}, spec={
        "access_modes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}, opts=opts)
    volumes += [{"name": "state", "persistent_volume_claim": {"claim_name": state.metadata["name"]}},
                {"name": "tmp", "empty_dir": {}}]
    mounts += [{"name": "state", "mount_path": "/var/lib/gpustack"}, {"name": "tmp", "mount_path": "/tmp"}]
    labels = {"app.kubernetes.io/managed-by": "gpustack-iac", "gpustack.io/gateway": name}
    k8s.apps.v1.Deployment(gw, metadata={"name": gw, "namespace": ns, "labels": labels}, spec={
        "replicas": 1, "selector": {"match_labels": labels},
        "strategy": {"type": "Recreate"},  # one controller at a time: its state is a local SQLite file
        "template": {"metadata": {"labels": labels}, "spec": {
            "service_account_name": account.metadata["name"],
            "security_context": {"run_as_non_root": True, "run_as_user": RUNTIME_UID, "run_as_group": RUNTIME_UID,
                                 "fs_group": RUNTIME_UID, "seccomp_profile": {"type": "RuntimeDefault"}},
            # fsGroup makes the Secret's files group-readable, which the runtime refuses for a token:
            # copy them, owner-only, into a memory volume first.
            "init_containers": [{"name": "tokens", "image": image, "command": ["python", "-c", COPY_TOKENS],
                                 "security_context": _RESTRICTED,
                                 "volume_mounts": [{"name": "secret", "mount_path": "/etc/gpustack-secret", "read_only": True},
                                                   {"name": "tokens", "mount_path": TOKENS}]}],
            "containers": [{"name": "gateway", "image": image,
                            "command": ["python", "-m", "gpustack_iac.runtime.gateway", *args],
                            "ports": [{"container_port": 8080, "name": "http"}, {"container_port": 8443, "name": "control"}],
                            "readiness_probe": {"tcp_socket": {"port": 8080}, "period_seconds": 5},
                            "security_context": _RESTRICTED,
                            "volume_mounts": mounts}],
            "volumes": volumes}}},
        opts=opts)
    lb = k8s.core.v1.Service(gw, metadata={"name": gw, "namespace": ns}, spec={
        "type": "LoadBalancer", "selector": labels, "ports": [{"name": "http", "port": 80, "target_port": 8080}]}, opts=opts)
    host = lb.status.apply(lambda s: ((s or {}).load_balancer.ingress or [{}])[0] if s else None)  # type: ignore[union-attr]

    def _addr(ingress: Any) -> str:
        if not ingress:
            return "pending"
        return getattr(ingress, "hostname", None) or getattr(ingress, "ip", None) or "pending"

    address = host.apply(_addr)
    return CloudGateway(url=pulumi.Output.from_input(f"http://{domain}") if domain else address.apply(lambda a: f"http://{a}"),
                      control_url=pulumi.Output.concat("http://", gw, ".", ns, ":8443"),
                      token=token, admin_token=admin_token)
