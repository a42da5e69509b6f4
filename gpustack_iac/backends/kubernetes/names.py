"""Kubernetes object names of a service's replica groups, without importing the Kubernetes SDK
(compile needs them for the controller's RBAC before deciding which SDK to load)."""

from __future__ import annotations

import re
from typing import Any


def k8s_name(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:63]


def deployment_names(definitions: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(service, group, Deployment name) of every replica group: RBAC names the Deployments, and
    the controller sizes each one to its group's count."""
    return [(d["name"], g["name"], k8s_name(d["name"], g["name"])) for d in definitions for g in d["groups"]]
