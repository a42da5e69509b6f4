"""Which data plane a gateway runs: `auto` (HAProxy when `haproxy` >= 2.6 is on PATH), `haproxy`, `python`."""

from __future__ import annotations

import logging
from typing import Literal

from gpustack_iac.runtime.gateway.haproxy.process import MIN_VERSION, HaproxyError, haproxy_version

DataPlaneChoice = Literal["auto", "haproxy", "python"]
DATA_PLANE_CHOICES: tuple[str, ...] = ("auto", "haproxy", "python")

log = logging.getLogger("gpustack_iac.gateway")


def select_data_plane(choice: str, binary: str = "haproxy") -> Literal["haproxy", "python"]:
    """The plane to run; `auto` says in one line why it falls back to Python, `haproxy` fails without it."""
    if choice == "python":
        return "python"
    version = haproxy_version(binary)
    if version is not None and version >= MIN_VERSION:
        return "haproxy"
    found = "no haproxy on PATH" if version is None else f"haproxy {version[0]}.{version[1]} is older than 2.6"
    if choice == "haproxy":
        raise HaproxyError(f"data_plane: haproxy was asked for, but {found}")
    log.warning("data plane: %s; using the Python data plane (slower per request, same behaviour)", found)
    return "python"
