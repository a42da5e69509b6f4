"""Kubernetes object names of a service's replica groups, without importing the Kubernetes SDK
(compile needs them for the controller's RBAC before deciding which SDK to load)."""

from __future__ import annotations

import re
from typing import Any


def k8s_name(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:63]


def deployment_names(definitions: list[dict[str, Any]]) -> list[str]:
    return [k8s_name(d["name"], g["name"]) for d in definitions for g in d["groups"]]
