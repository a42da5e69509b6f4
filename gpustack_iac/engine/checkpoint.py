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
    # Resources dropped from state whose real counterpart could not be deleted (`destroy --force`,
    # `state rm`): kept so someone can still find and remove them by hand.
    abandoned: list[dict[str, Any]] = field(default_factory=list)


def backup_path(path: Path) -> Path:
    """The copy of the checkpoint written with it at each compaction (Pulumi's file backend skips `*.json.bak`)."""
    return path.with_name(path.name + ".bak")


def recovery_hint(path: Path) -> str:
    """What to do about an unreadable or damaged checkpoint at `path`, as one sentence or two."""
    backup = backup_path(path)
    try:
        copy = parse_checkpoint(backup.read_bytes(), backup)
    except FileNotFoundError:
        copy = None
        why = f"There is no copy ({backup} is missing)"
    except (OSError, StateError):
        copy = None
        why = f"Its copy {backup} is unreadable too"
    if copy is not None:
        return (
            f"The copy written with it at the last compaction, {backup} (serial {copy.serial}, "
            f"{len(copy.resources)} resources), can replace it: run `gpustack-iac state restore` "
            "(the damaged file is kept beside it; the journal of later operations still applies), "
            "then `gpustack-iac plan` to check."
        )
    return (
        f"{why}: move {path} aside to start from an empty state (what it recorded is then no longer "
        "managed: stop those processes or delete those resources by hand), or restore it from your own backup."
    )


def _damaged(path: Path, why: str) -> StateError:
    return StateError(f"the state file {path} is damaged ({why}). {recovery_hint(path)}")


def read_checkpoint(path: Path) -> RawState:
    """The checkpoint file at `path` as stored; an empty state when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if backup_path(path).exists():
            # Only a compaction writes the copy, and always after the checkpoint: the checkpoint was removed.
            raise StateError(f"the state file {path} is missing. {recovery_hint(path)}") from None
        return RawState()
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror}") from exc
    try:
        return parse_checkpoint(data, path)
    except _Malformed as exc:
        raise _damaged(path, str(exc)) from None


class _Malformed(StateError):
    """The bytes are not a version-3 checkpoint (the reason, without the recovery advice)."""


def parse_checkpoint(data: bytes, path: Path) -> RawState:
    """Checkpoint bytes as stored, checked for the shape every later step relies on."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Malformed("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _Malformed(f"not valid JSON: {exc.msg}, line {exc.lineno}") from None
    except RecursionError:
        raise _Malformed("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise _Malformed(f"a JSON {type(doc).__name__} where a checkpoint object was expected")
    if doc.get("version") != CHECKPOINT_VERSION:
        raise _Malformed(f"checkpoint version {doc.get('version')!r}; this tool reads version 3")
    checkpoint = _object(doc.get("checkpoint"), "checkpoint")
    latest = _object(checkpoint.get("latest"), "checkpoint.latest")
    raw = RawState()
    raw.resources = _records(latest.get("resources"), "resources")
    for i, res in enumerate(raw.resources):
        if not isinstance(res.get("urn"), str) or not isinstance(res.get("type"), str):
            raise _Malformed(f"resources[{i}] has no urn or type")
    raw.pending = _records(latest.get("pending_operations"), "pending_operations")
    for i, op in enumerate(raw.pending):
        if not isinstance(op.get("resource"), dict) or not isinstance(op["resource"].get("urn"), str):
            raise _Malformed(f"pending_operations[{i}] has no resource")
    provider = _object(latest.get("secrets_providers"), "secrets_providers")
    if provider:
        raw.secrets_type = str(provider.get("type"))
        state = _object(provider.get("state"), "secrets_providers.state")
        salt = state.get("salt")
        if salt is not None and not isinstance(salt, str):
            raise _Malformed("secrets_providers.state.salt is not a string")
        raw.salt = salt
    ext = _object(doc.get(_EXTENSION_KEY), _EXTENSION_KEY)
    serial = ext.get("serial", 0)
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise _Malformed(f"{_EXTENSION_KEY}.serial is {serial!r}, not a serial number")
    raw.serial = serial
    if "outputs" in ext:
        raw.outputs = _object(ext.get("outputs"), f"{_EXTENSION_KEY}.outputs")
    abandoned = ext.get("abandoned", [])
    if not isinstance(abandoned, list) or not all(isinstance(a, dict) for a in abandoned):
        raise _Malformed(f"{_EXTENSION_KEY}.abandoned is not a list of objects")
    raw.abandoned = abandoned
    return raw


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Malformed(f"{what} is a JSON {type(value).__name__}, not an object")
    return value


def _records(value: Any, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _Malformed(f"{what} is not a list of objects")
    return list(value)


def check_against_backup(path: Path, raw: RawState) -> None:
    """Refuse a checkpoint that lost resources its copy of the same serial still records.

    The copy is written with the checkpoint, so both have the same bytes unless something else
    changed one of them. A checkpoint with resources removed by hand would otherwise plan a second
    deployment beside the running one; a checkpoint rewritten by the Pulumi CLI has serial 0 and
    is not compared.
    """
    backup = backup_path(path)
    try:
        copy_bytes = backup.read_bytes()
        if raw.serial == 0 or copy_bytes == path.read_bytes():
            return
        copy = parse_checkpoint(copy_bytes, backup)
    except (OSError, StateError):
        return  # no usable copy: nothing to compare with (recovery_hint says so when it matters)
    if copy.serial != raw.serial:
        return
    kept = {str(r.get("urn")) for r in raw.resources}
    lost = sorted({str(r.get("urn")) for r in copy.resources} - kept)
    if lost:
        names = ", ".join(urn.rsplit("::", 1)[-1] for urn in lost[:5]) + (", ..." if len(lost) > 5 else "")
        raise StateError(
            f"the state file {path} lacks {len(lost)} resources ({names}) that its copy {backup}, written with it "
            f"at serial {raw.serial}, records: it was changed outside gpustack-iac, and planning from it would "
            "deploy them a second time beside the running ones. Run `gpustack-iac state restore` to put the copy "
            f"back (the changed file is kept beside it); if the removal was intended, delete {backup}."
        )


def stack_outputs(raw: RawState) -> dict[str, Any]:
    """The stack's outputs: ours if we set them, else those of the root stack resource."""
    if raw.outputs is not None:
        return raw.outputs
    for res in raw.resources:
        if res.get("type") == ROOT_STACK_TYPE and not res.get("parent"):
            return dict(res.get("outputs") or {})
    return {}


def checkpoint_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def checkpoint_document(qualified_name: str, raw: RawState) -> dict[str, Any]:
    """The whole checkpoint file for `raw`, as written by a compaction."""
    return {
        "version": CHECKPOINT_VERSION,
        "checkpoint": {"stack": qualified_name, "latest": deployment(raw)},
        _EXTENSION_KEY: {"serial": raw.serial, "outputs": raw.outputs if raw.outputs is not None else {},
                         **({"abandoned": raw.abandoned} if raw.abandoned else {})},
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
