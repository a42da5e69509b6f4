"""The stored checkpoint document: Pulumi's versioned checkpoint (version 3) as JSON dicts.

Reads a checkpoint file into a `RawState` (secrets still encrypted), and builds the documents
written back: the checkpoint itself with our bookkeeping extension, and the untyped deployment
inside it, with resources in the dependency order Pulumi requires and stack outputs mirrored on
the root stack resource. Everything here works on the stored dicts; the typed form is state.py's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from gpustack_iac.engine.secrets import SECRETS_PROVIDER_TYPE
from gpustack_iac.errors import StateError

CHECKPOINT_VERSION = 3
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
# Our own bookkeeping inside the versioned checkpoint. Pulumi ignores unknown keys when it reads
# the file, and drops this one when it rewrites it (we then fall back to serial 0 and the root
# stack resource's outputs).
_EXTENSION_KEY = "gpustack"


@dataclass
class RawState:
    """The state as stored (secrets still encrypted): checkpoint plus replayed journal."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] | None = None  # None: never set by us
    salt: str | None = None
    secrets_type: str | None = None
    serial: int = 0


def read_checkpoint(path: Path) -> RawState:
    """The checkpoint file at `path` as stored; an empty state when there is none yet."""
    raw = RawState()
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return raw
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"the state file {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise StateError(f"the state file {path} has checkpoint version {version!r}; this tool reads version 3")
    latest = (doc.get("checkpoint") or {}).get("latest") or {}
    raw.resources = list(latest.get("resources") or [])
    raw.pending = list(latest.get("pending_operations") or [])
    provider = latest.get("secrets_providers") or {}
    if provider:
        raw.secrets_type = str(provider.get("type"))
        state = provider.get("state") or {}
        raw.salt = state.get("salt") if isinstance(state, dict) else None
    ext = doc.get(_EXTENSION_KEY) or {}
    raw.serial = int(ext.get("serial", 0))
    if "outputs" in ext:
        raw.outputs = ext.get("outputs") or {}
    return raw


def stack_outputs(raw: RawState) -> dict[str, Any]:
    """The stack's outputs: ours if we set them, else those of the root stack resource."""
    if raw.outputs is not None:
        return raw.outputs
    for res in raw.resources:
        if res.get("type") == ROOT_STACK_TYPE and not res.get("parent"):
            return dict(res.get("outputs") or {})
    return {}


def checkpoint_document(qualified_name: str, raw: RawState) -> dict[str, Any]:
    """The whole checkpoint file for `raw`, as written by a compaction."""
    return {
        "version": CHECKPOINT_VERSION,
        "checkpoint": {"stack": qualified_name, "latest": deployment(raw)},
        _EXTENSION_KEY: {"serial": raw.serial, "outputs": raw.outputs if raw.outputs is not None else {}},
    }


def deployment(raw: RawState) -> dict[str, Any]:
    """Pulumi's untyped deployment for `raw`, secrets as stored."""
    version = _engine_version()
    resources = _dependency_order(raw.resources)
    if raw.outputs is not None:
        # Pulumi reads stack outputs from the root stack resource: mirror ours there.
        for i, res in enumerate(resources):
            if res.get("type") == ROOT_STACK_TYPE and not res.get("parent"):
                resources[i] = {**res, "outputs": raw.outputs}
    result: dict[str, Any] = {
        "manifest": {
            "time": datetime.now(timezone.utc).isoformat(),
            "magic": hashlib.sha256(version.encode("utf-8")).hexdigest(),
            "version": version,
        },
    }
    if raw.salt is not None:
        result["secrets_providers"] = {"type": SECRETS_PROVIDER_TYPE, "state": {"salt": raw.salt}}
    result["resources"] = resources
    result["pending_operations"] = raw.pending
    return result


def _provider_urn(ref: str) -> str:
    # A provider reference is "<provider urn>::<provider id>"; URNs themselves contain "::".
    return ref.rsplit("::", 1)[0] if "::" in ref else ref


def _dependency_order(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stable order in which every resource follows its parent, provider and dependencies.

    Pulumi rejects a snapshot where a resource precedes what it refers to; a delete-before-replace
    re-creation appends at the end, so dependents recorded earlier may need to move after it.
    """
    by_urn: dict[str, list[int]] = {}
    for i, res in enumerate(resources):
        by_urn.setdefault(str(res.get("urn")), []).append(i)
    placed = [False] * len(resources)
    visiting = [False] * len(resources)
    order: list[dict[str, Any]] = []

    def refs(res: dict[str, Any]) -> Iterator[str]:
        if res.get("parent"):
            yield str(res["parent"])
        if res.get("provider"):
            yield _provider_urn(str(res["provider"]))
        yield from (str(u) for u in res.get("dependencies") or [])
        for urns in (res.get("propertyDependencies") or {}).values():
            yield from (str(u) for u in urns)

    def visit(start: int) -> None:
        # Iterative depth-first walk: deep parent chains must not hit Python's recursion limit.
        stack: list[tuple[int, Iterator[str]]] = [(start, refs(resources[start]))]
        visiting[start] = True
        while stack:
            idx, it = stack[-1]
            pushed = False
            for urn in it:
                for j in by_urn.get(urn, []):
                    if not placed[j] and not visiting[j]:
                        visiting[j] = True
                        stack.append((j, refs(resources[j])))
                        pushed = True
                        break
                if pushed:
                    break
            if not pushed:
                stack.pop()
                placed[idx] = True
                order.append(resources[idx])

    for i in range(len(resources)):
        if not placed[i]:
            visit(i)
    return order


def _engine_version() -> str:
    try:
        return "v" + metadata.version("pulumi")
    except metadata.PackageNotFoundError:
        return "v3.0.0"
