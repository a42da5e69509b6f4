"""The host backends: agents on this machine (local) and on SSH hosts (ssh)."""

from __future__ import annotations

from typing import ClassVar

from gpustack_iac.backends.base import HostBackend


class Local(HostBackend):
    """Agents and the gateway as processes on this machine."""

    name = "local"

    # Placement properties the local backend has nothing to decide with: accepted, reported as ignored.
    ignored_placement: ClassVar[tuple[str, ...]] = (
        "regions", "instance_types", "spot_policy", "max_price", "retry", "max_duration", "python", "nvcc",
        "idle_duration", "creation_policy", "termination_policy", "termination_idle_time")


class Ssh(HostBackend):
    """Agents installed over SSH on hosts you name; the gateway on this machine or on one of them."""

    name = "ssh"
