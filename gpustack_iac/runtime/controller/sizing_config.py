"""The gateway's `--node-groups FILE`: which node groups (or Deployments) the controller sizes.

A JSON object, written by the stack next to the gateway's other files:

    {"kind": "aws", "region": "us-east-1", "interval": 30, "fallback_after": 600,
     "groups": [{"name": "gpu-spot", "fleet": "gpu", "min": 1, "max": 4, "gpus": 4,
                 "labels": {"backend": "aws", "region": "us-east-1", "spot": "true"},
                 "idle_duration": 300}]}
    {"kind": "gcp", "project": "my-project", "region": "us-central1", "groups": [...]}    # regional MIGs
    (gcp and azure may add "api" and "metadata": base URLs other than the cloud's own)
    {"kind": "azure", "subscription": "<id>", "resource_group": "proj-dev", "identity": "<client id>",
     "groups": [...]}  # VMSS
    {"kind": "kubernetes", "namespace": "proj-dev",
     "deployments": [{"service": "llm", "group": "main", "name": "llm-main"}],
     "server": "https://...", "token_file": "/path"}   # both optional: in-cluster by default
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.auth import read_token_file
from gpustack_iac.runtime.controller.node_sizing import FALLBACK_AFTER, DeploymentSizer, NodeGroupSizer, Sizer
from gpustack_iac.runtime.scaling.nodegroups import CloudGroupScaler, NodeGroupSpec


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    fleet: str
    min: int = Field(ge=0)
    max: int = Field(ge=0)
    gpus: int = Field(default=0, ge=0)
    labels: dict[str, str] = {}
    idle_duration: float | None = Field(default=None, ge=0)  # seconds; absent: idle nodes are kept


class _Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str
    group: str
    name: str


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern="^(aws|gcp|azure|kubernetes)$")
    region: str | None = None
    project: str | None = None  # gcp
    subscription: str | None = None  # azure
    resource_group: str | None = None  # azure
    interval: float = Field(default=30.0, gt=0)
    fallback_after: float = Field(default=FALLBACK_AFTER, gt=0)  # seconds; node_sizing.py
    groups: list[_Group] = []
    namespace: str | None = None
    deployments: list[_Deployment] = []
    server: str | None = None
    token_file: Path | None = None
    # gcp and azure: where the cloud's API and the instance's metadata server answer; absent, the
    # cloud's own (the boot rehearsal aims them at its stand-ins).
    api: str | None = None
    metadata: str | None = None
    identity: str | None = None  # azure: the user-assigned managed identity's client id


def load_sizers(path: Path) -> tuple[Sizer, ...]:
    try:
        cfg = _Config.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise GpustackError(f"{path}: not a node-groups file: {exc}") from None
    vm_scaler = _VM_SCALERS.get(cfg.kind)
    if vm_scaler is not None:
        specs = [NodeGroupSpec(g.name, g.fleet, g.min, g.max, g.gpus, g.labels, g.idle_duration) for g in cfg.groups]
        return (NodeGroupSizer(vm_scaler(cfg, path), specs, cfg.interval, cfg.fallback_after),)
    from gpustack_iac.runtime.scaling.kubernetes import DeploymentScaler, from_token, in_cluster

    if not cfg.namespace:
        raise GpustackError(f"{path}: namespace: required for kind kubernetes")
    kube: Any = (from_token(cfg.server, read_token_file(cfg.token_file), cfg.namespace)
                 if cfg.server and cfg.token_file else in_cluster())
    deployments = {(d.service, d.group): d.name for d in cfg.deployments}
    return (DeploymentSizer(DeploymentScaler(kube, cfg.namespace), deployments),)


def _required(path: Path, cfg: _Config, *names: str) -> list[str]:
    missing = [n for n in names if not getattr(cfg, n)]
    if missing:
        raise GpustackError(f"{path}: {', '.join(missing)}: required for kind {cfg.kind}")
    return [str(getattr(cfg, n)) for n in names]


# Each VM cloud's scaler, with the instance's own identity (no key in the file); the SDK or
# client is imported only where that cloud's groups are sized.
def _aws(cfg: _Config, path: Path) -> CloudGroupScaler:
    from gpustack_iac.runtime.scaling.aws import AsgScaler

    (region,) = _required(path, cfg, "region")
    return AsgScaler.from_region(region)


def _gcp(cfg: _Config, path: Path) -> CloudGroupScaler:
    from gpustack_iac.runtime.scaling.gcp import MigScaler

    project, region = _required(path, cfg, "project", "region")
    return MigScaler.from_metadata(project, region, metadata=cfg.metadata, api=cfg.api)


def _azure(cfg: _Config, path: Path) -> CloudGroupScaler:
    from gpustack_iac.runtime.scaling.azure import VmssScaler

    subscription, group = _required(path, cfg, "subscription", "resource_group")
    return VmssScaler.from_metadata(subscription, group, metadata=cfg.metadata, api=cfg.api, client_id=cfg.identity)


_VM_SCALERS: dict[str, Callable[[_Config, Path], CloudGroupScaler]] = {"aws": _aws, "gcp": _gcp, "azure": _azure}
