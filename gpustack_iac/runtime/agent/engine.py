"""The one container engine client the agent uses: the `docker` CLI, or Podman's remote client.

Both talk the Docker Engine API to whatever `DOCKER_HOST` names (Docker, or `podman system
service`), so one code path serves both. The client is the supervised process of a container
replica, so it must see the standard client settings (envpolicy.CONTAINER_CLIENT_NAMES) even though a replica's environment
is an allow-list; the container itself never receives them (only names passed with `-e`).
"""

from __future__ import annotations

import shutil
from typing import Mapping


def client_argv(environ: Mapping[str, str]) -> list[str]:
    """The client command: `docker`, else `podman --remote` pointed at `DOCKER_HOST` when set
    (Podman's own client reads CONTAINER_HOST, not DOCKER_HOST), else plain `podman`."""
    docker = shutil.which("docker", path=environ.get("PATH"))
    if docker is not None:
        return [docker]
    podman = shutil.which("podman", path=environ.get("PATH"))
    if podman is None:
        return ["docker"]  # fails with "not found", which the replica's log then says
    host = environ.get("DOCKER_HOST") or environ.get("CONTAINER_HOST")
    return [podman, "--remote", "--url", host] if host else [podman]
