"""Host volumes: named directories the agent creates, reports and (only when asked) deletes.

A volume directory carries a marker file naming it; the agent deletes only a directory whose
marker names the volume asked for, so a wrong path can never remove someone else's data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gpustack_iac.errors import AgentApiError
from gpustack_iac.runtime.agent.spec import host_path
from gpustack_iac.runtime.auth import json_response

MARKER = ".gpustack-volume.json"
VOLUME_ROOT_NAME = ".gpustack-volumes"  # compile_workloads.SSH_VOLUME_ROOT's last part


def _path(request: web.Request, body: dict[str, Any] | None = None) -> Path:
    raw = (body or {}).get("path") if body is not None else request.query.get("path")
    raw = host_path(raw) if isinstance(raw, str) else raw
    if not isinstance(raw, str) or not raw.startswith("/") or ".." in Path(raw).parts:
        raise AgentApiError("path: expected an absolute path (or ~/...) without '..'", 400, "bad_request")
    return Path(raw)


def _used_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def describe(name: str, root: Path) -> dict[str, Any]:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise AgentApiError(f"no volume {name!r} at {root}", 404, "unknown_volume") from exc
    if marker.get("name") != name:
        raise AgentApiError(f"{root} holds volume {marker.get('name')!r}, not {name!r}", 409, "volume_conflict")
    return {**marker, "path": str(root), "used_bytes": _used_bytes(root)}


def ensure(name: str, root: Path, size_bytes: int) -> dict[str, Any]:
    """Create the directory and its marker; an existing volume of that name is kept as it is."""
    marker = root / MARKER
    if marker.exists():
        return describe(name, root)
    if root.exists() and any(root.iterdir()):
        raise AgentApiError(f"{root} exists and is not empty; refusing to adopt it as volume {name!r}", 409, "volume_conflict")
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"name": name, "size_bytes": size_bytes, "created_at": time.time()}))
    return describe(name, root)


async def put_volume(request: web.Request) -> web.Response:
    body = await request.json()
    if not isinstance(body, dict):
        raise AgentApiError("the body must be a JSON object", 400, "bad_request")
    size = body.get("size_bytes") or 0
    if not isinstance(size, (int, float)) or size < 0:
        raise AgentApiError("size_bytes: expected a non-negative number", 400, "bad_request")
    return json_response(ensure(request.match_info["name"], _path(request, body), int(size)))


async def get_volume(request: web.Request) -> web.Response:
    return json_response(describe(request.match_info["name"], _path(request)))


async def delete_volume(request: web.Request) -> web.Response:
    name, root = request.match_info["name"], _path(request)
    info = describe(name, root)
    shutil.rmtree(root)
    if root.parent.name == VOLUME_ROOT_NAME:
        # The SSH backend's shared volume root goes with its last volume (nothing left in a home).
        with contextlib.suppress(OSError):
            root.parent.rmdir()
    return json_response({**info, "deleted": True})


def add_routes(app: web.Application) -> None:
    app.router.add_put("/v1/volumes/{name}", put_volume)
    app.router.add_get("/v1/volumes/{name}", get_volume)
    app.router.add_delete("/v1/volumes/{name}", delete_volume)
