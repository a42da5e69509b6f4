"""Stack state in Pulumi's checkpoint format, with an append-only journal and a lock.

On disk (the layout of Pulumi's file backend, project-scoped, so `pulumi login file://<root>` reads it):

    <root>/.pulumi/meta.yaml                          "version: 1" marks the project-scoped layout
    <root>/.pulumi/stacks/<project>/<stack>.json      versioned checkpoint (version 3), written atomically
    <root>/.pulumi/stacks/<project>/<stack>.journal.jsonl   one fsync'd JSON line per begin / end / outputs
    <root>/.pulumi/stacks/<project>/<stack>.lock      owner of the running operation

Every step appends one line to the journal (O(1)); `compact()` folds the journal into the
checkpoint once, at the end of an operation or on the next run after a crash. The journal's
header names the checkpoint serial it applies on top of, so a crash between writing a compacted
checkpoint and deleting the journal never applies the journal twice.

Secret values are encrypted before anything touches the disk (see secrets.py); the in-memory
form is {SECRET_SIG_KEY: SECRET_SIG, "value": plain}.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from gpustack_iac.engine import lock as lockfile
from gpustack_iac.engine.lock import LockOwner
from gpustack_iac.engine.secrets import (
    SECRETS_PROVIDER_TYPE,
    Crypter,
    create_passphrase_file,
    crypter_from_salt_state,
    decrypt_tree,
    encrypt_tree,
    find_passphrase,
    has_encrypted_secrets,
    has_plain_secrets,
    new_salt_state,
)
from gpustack_iac.errors import StateError

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 3
JOURNAL_VERSION = 1
OPERATION_TYPES = ("creating", "updating", "deleting", "reading")
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
DEFAULT_STATE_URL = "file://.gpustack/state"
# Our own bookkeeping inside the versioned checkpoint. Pulumi ignores unknown keys when it reads
# the file, and drops this one when it rewrites it (we then fall back to serial 0 and the root
# stack resource's outputs).
_EXTENSION_KEY = "gpustack"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_REMOTE_SCHEMES = ("s3", "gs", "azblob")


@dataclass
class ResourceState:
    """One entry of the checkpoint's resources[] (Pulumi apitype ResourceV3)."""

    urn: str
    type: str
    custom: bool
    id: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    provider: str = ""
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    replace_on_changes: list[str] = field(default_factory=list)
    # The old half of a create-before-delete replacement, still to be deleted (Pulumi's `delete`).
    delete: bool = False
    external: bool = False
    # Any other ResourceV3 field (created, modified, aliases, customTimeouts, ...) kept verbatim.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PendingOperation:
    resource: ResourceState
    type: str  # "creating" | "updating" | "deleting" | "reading"


@dataclass
class Checkpoint:
    stack: str
    project: str
    resources: list[ResourceState]
    pending_operations: list[PendingOperation]
    outputs: dict[str, Any]
    serial: int

    def get(self, urn: str) -> ResourceState | None:
        """The live (not pending-delete) resource with this URN."""
        for res in self.resources:
            if res.urn == urn and not res.delete:
                return res
        return None


# Python field name -> ResourceV3 JSON name, for the fields written only when set (Go's omitempty).
_OPTIONAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("delete", "delete"),
    ("id", "id"),
    ("parent", "parent"),
    ("protect", "protect"),
    ("external", "external"),
    ("dependencies", "dependencies"),
    ("provider", "provider"),
    ("property_dependencies", "propertyDependencies"),
    ("retain_on_delete", "retainOnDelete"),
    ("delete_before_replace", "deleteBeforeReplace"),
    ("ignore_changes", "ignoreChanges"),
    ("replace_on_changes", "replaceOnChanges"),
)
_KNOWN_KEYS = {"urn", "custom", "type", "inputs", "outputs"} | {json_name for _, json_name in _OPTIONAL_FIELDS}

Transform = Callable[[Any], Any]


def resource_to_json(res: ResourceState, encode: Transform) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in res.extra.items() if k not in _KNOWN_KEYS}
    out["urn"] = res.urn
    out["custom"] = res.custom
    out["type"] = res.type
    if res.inputs:
        out["inputs"] = encode(res.inputs)
    if res.outputs:
        out["outputs"] = encode(res.outputs)
    for attr, key in _OPTIONAL_FIELDS:
        value = getattr(res, attr)
        if value:
            out[key] = value
    return out


def resource_from_json(data: dict[str, Any], decode: Transform) -> ResourceState:
    try:
        return ResourceState(
            urn=str(data["urn"]),
            type=str(data["type"]),
            custom=bool(data.get("custom", False)),
            id=str(data.get("id") or ""),
            inputs=dict(decode(data.get("inputs") or {})),
            outputs=dict(decode(data.get("outputs") or {})),
            parent=str(data.get("parent") or ""),
            dependencies=[str(u) for u in data.get("dependencies") or []],
            property_dependencies={
                str(k): [str(u) for u in v] for k, v in (data.get("propertyDependencies") or {}).items()
            },
            provider=str(data.get("provider") or ""),
            protect=bool(data.get("protect", False)),
            retain_on_delete=bool(data.get("retainOnDelete", False)),
            delete_before_replace=bool(data.get("deleteBeforeReplace", False)),
            ignore_changes=[str(p) for p in data.get("ignoreChanges") or []],
            replace_on_changes=[str(p) for p in data.get("replaceOnChanges") or []],
            delete=bool(data.get("delete", False)),
            external=bool(data.get("external", False)),
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"a resource in the state is malformed: {exc!r}") from exc


@dataclass
class _RawState:
    """The state as stored (secrets still encrypted): checkpoint plus replayed journal."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] | None = None  # None: never set by us
    salt: str | None = None
    secrets_type: str | None = None
    serial: int = 0


class _Slot:
    """One resource entry during a journal replay, and the run of entries it sits in."""

    __slots__ = ("bucket", "res")

    def __init__(self, res: dict[str, Any], bucket: list[_Slot]) -> None:
        self.res = res
        self.bucket = bucket


class _ReplayIndex:
    """The resource list of a replay, indexed by URN, so each journal record costs O(1) rather than a scan.

    The order is exactly that of the plain list the rules are written for: entries live in runs
    ("buckets", one per entry to begin with) kept in list order; an entry inserted right after another
    joins that entry's run. `by_urn` lists each URN's entries in list order, so "the first entry with
    this URN such that ..." looks only at that URN's few entries.
    """

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.buckets: list[list[_Slot]] = []
        self.by_urn: dict[str, list[_Slot]] = {}
        for res in resources:
            self.append(res)

    def entries(self, urn: str) -> list[_Slot]:
        return self.by_urn.get(urn, [])

    def append(self, res: dict[str, Any]) -> None:
        bucket: list[_Slot] = []
        slot = _Slot(res, bucket)
        bucket.append(slot)
        self.buckets.append(bucket)
        self.by_urn.setdefault(str(res.get("urn")), []).append(slot)

    def insert_after(self, slot: _Slot, res: dict[str, Any]) -> None:
        new = _Slot(res, slot.bucket)
        slot.bucket.insert(_position(slot.bucket, slot) + 1, new)
        same_urn = self.by_urn[str(slot.res.get("urn"))]
        same_urn.insert(_position(same_urn, slot) + 1, new)

    def remove(self, slot: _Slot) -> None:
        del slot.bucket[_position(slot.bucket, slot)]
        urn = str(slot.res.get("urn"))
        same_urn = self.by_urn[urn]
        del same_urn[_position(same_urn, slot)]
        if not same_urn:
            del self.by_urn[urn]

    def resources(self) -> list[dict[str, Any]]:
        return [slot.res for bucket in self.buckets for slot in bucket]


def _position(slots: list[_Slot], slot: _Slot) -> int:
    # By identity: two entries may hold equal dicts.
    for i, candidate in enumerate(slots):
        if candidate is slot:
            return i
    raise ValueError("internal error: a replayed resource entry is missing from its index")


def _apply_end(raw: _RawState, index: _ReplayIndex, urn: str, new: dict[str, Any] | None) -> None:
    """Apply one finished operation; see StateStore.end for the rules."""
    pending: dict[str, Any] | None = None
    for i in range(len(raw.pending) - 1, -1, -1):
        if raw.pending[i].get("resource", {}).get("urn") == urn:
            pending = raw.pending.pop(i)
            break
    op_type = pending.get("type") if pending else None
    op_res: dict[str, Any] = pending.get("resource", {}) if pending else {}
    op_id = op_res.get("id")
    entries = index.entries(urn)
    if new is None:
        target: _Slot | None = None
        if op_id:
            # Delete exactly the instance the operation was about: after a create-before-delete
            # replacement the URN also names the new, live instance.
            target = next((e for e in entries if e.res.get("id") == op_id), None)
        else:
            doomed = [e for e in entries if e.res.get("delete")]
            target = (doomed or entries or [None])[0]
        if target is not None:
            index.remove(target)
        return
    if op_id and op_type != "creating" and new.get("id") == op_id:
        # An update, read or failed delete of a known instance: put the result exactly where that
        # instance is, keeping a pending-delete mark (a failed delete of a replaced instance stays doomed).
        for entry in entries:
            if entry.res.get("id") == op_id:
                entry.res = {**new, "delete": True} if entry.res.get("delete") else new
                return
    live = next((e for e in entries if not e.res.get("delete")), None)
    if live is None:
        index.append(new)
        return
    old = live.res
    replacing = (
        op_type == "creating" and bool(old.get("custom")) and bool(old.get("id")) and old.get("id") != new.get("id")
    )
    if replacing:
        # Keep the old instance, marked for deletion, until its own delete step ends.
        live.res = {**old, "delete": True}
        index.insert_after(live, new)
    else:
        live.res = new


def _apply_record(raw: _RawState, index: _ReplayIndex, record: dict[str, Any]) -> None:
    kind = record.get("kind")
    if kind == "begin":
        op = record["op"]
        urn = op["resource"]["urn"]
        # A new operation on a URN supersedes one a crashed run left in flight on it (Pulumi also drops
        # those at the next update, after warning about them); otherwise its end would never clear it.
        raw.pending = [p for p in raw.pending if p.get("resource", {}).get("urn") != urn]
        raw.pending.append(op)
    elif kind == "end":
        _apply_end(raw, index, str(record["urn"]), record.get("resource"))
    elif kind == "outputs":
        raw.outputs = record.get("outputs") or {}
    elif kind == "secrets":
        raw.salt = record["state"]["salt"]
        raw.secrets_type = SECRETS_PROVIDER_TYPE


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Readers see the old file or the new one, never a partial one, even across a crash."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _engine_version() -> str:
    try:
        return "v" + metadata.version("pulumi")
    except metadata.PackageNotFoundError:
        return "v3.0.0"


def _check_name(kind: str, name: str) -> None:
    if not name or not _NAME_RE.match(name) or name in (".", ".."):
        raise StateError(f"{kind} name {name!r} is not valid: use letters, digits, '-', '_' and '.'")


class StateStore:
    """The state of one stack of one project, under a file-backend root."""

    def __init__(self, root: Path, project: str, stack: str, passphrase: str | None = None) -> None:
        _check_name("project", project)
        _check_name("stack", stack)
        self.root = Path(root)
        self.project = project
        self.stack = stack
        self._passphrase_arg = passphrase
        self.dir = self.root / ".pulumi" / "stacks" / project
        self.path = self.dir / f"{stack}.json"
        self.journal_path = self.dir / f"{stack}.journal.jsonl"
        self.lock_path = self.dir / f"{stack}.lock"
        self._salt: str | None = None
        self._secrets_type: str | None = None
        self._salt_known = False
        self._crypter: Crypter | None = None
        self._crypter_salt: str | None = None
        # Group commit of journal appends from parallel steps (see _append_unchecked).
        self._write_lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._written = 0
        self._synced = 0

    # ----- public API -------------------------------------------------------------------------

    @staticmethod
    def from_url(url: str, project: str, stack: str, passphrase: str | None) -> StateStore:
        url = (url or "").strip() or DEFAULT_STATE_URL
        # Absolute now, so a later chdir (programs may change directory) cannot move the state.
        if "://" not in url:
            return StateStore(Path(url).expanduser().absolute(), project, stack, passphrase)
        scheme, rest = url.split("://", 1)
        scheme = scheme.lower()
        if scheme == "file":
            path = rest or DEFAULT_STATE_URL.split("://", 1)[1]
            return StateStore(Path(path).expanduser().absolute(), project, stack, passphrase)
        if scheme in _REMOTE_SCHEMES:
            raise StateError(
                f"state location {scheme}:// is not supported by the embedded engine yet, use --engine pulumi"
            )
        raise StateError(f"unknown state location scheme {scheme}://: use file://, s3://, gs:// or azblob://")

    def exists(self) -> bool:
        return self.path.exists() or self.journal_path.exists()

    def load(self) -> Checkpoint:
        """The current state: the checkpoint with any journal left by a crash replayed on top."""
        raw = self._read_raw()
        decode = self._decoder(raw)
        resources = [resource_from_json(r, decode) for r in raw.resources]
        pending: list[PendingOperation] = []
        for op in raw.pending:
            pending.append(PendingOperation(resource_from_json(op.get("resource", {}), decode), str(op.get("type"))))
        outputs = self._outputs_of(raw)
        return Checkpoint(
            stack=self.stack,
            project=self.project,
            resources=resources,
            pending_operations=pending,
            outputs=dict(decode(outputs)),
            serial=raw.serial,
        )

    @contextmanager
    def lock(self, operation: str) -> Iterator[None]:
        with lockfile.hold(self.lock_path, self.stack, operation):
            yield

    def lock_owner(self) -> LockOwner | None:
        return lockfile.read_owner(self.lock_path)

    def unlock(self, force: bool = False) -> LockOwner | None:
        return lockfile.clear(self.lock_path, self.stack, force)

    def begin(self, op: PendingOperation) -> None:
        if op.type not in OPERATION_TYPES:
            raise StateError(f"unknown operation type {op.type!r}: expected one of {', '.join(OPERATION_TYPES)}")

        def build(records: list[dict[str, Any]]) -> None:
            encode = self._encoder(records, [op.resource.inputs, op.resource.outputs])
            records.append(
                {"kind": "begin", "op": {"resource": resource_to_json(op.resource, encode), "type": op.type}}
            )

        self._append(build)

    def finished(self, op: PendingOperation, new: ResourceState | None) -> None:
        """Journal an operation that has already happened, `begin(op)` then `end(urn, new)`, in one append.

        For reads (refresh): nothing was changed by the read itself, so there is no provider call for
        the begin record to precede, and both records can share one write and one fsync.
        """
        if op.type not in OPERATION_TYPES:
            raise StateError(f"unknown operation type {op.type!r}: expected one of {', '.join(OPERATION_TYPES)}")

        def build(records: list[dict[str, Any]]) -> None:
            trees = [op.resource.inputs, op.resource.outputs] + ([new.inputs, new.outputs] if new is not None else [])
            encode = self._encoder(records, trees)
            records.append(
                {"kind": "begin", "op": {"resource": resource_to_json(op.resource, encode), "type": op.type}}
            )
            records.append(
                {"kind": "end", "urn": op.resource.urn, "resource": resource_to_json(new, encode) if new else None}
            )

        self._append(build)

    def end(self, urn: str, new: ResourceState | None) -> None:
        """Record that the operation begun on `urn` finished.

        `new` is the resource as it now is; None means it is gone from the state. Rules, applied
        in this order when the state is replayed:
        - None after a "deleting" operation removes exactly the instance that operation named (by id);
        - a resource with the id of the instance an updating / reading / deleting operation named replaces
          exactly that instance (a failed delete of a replaced instance keeps its `delete` mark);
        - a "creating" operation whose URN already has a live instance with another id is the first half
          of a create-before-delete replacement: the old instance stays, marked `delete`, until its own
          deleting operation ends;
        - otherwise the live instance with that URN is replaced in place, or `new` is appended.
        """

        def build(records: list[dict[str, Any]]) -> None:
            trees = [new.inputs, new.outputs] if new is not None else []
            encode = self._encoder(records, trees)
            records.append({"kind": "end", "urn": urn, "resource": resource_to_json(new, encode) if new else None})

        self._append(build)

    def set_outputs(self, outputs: dict[str, Any]) -> None:
        def build(records: list[dict[str, Any]]) -> None:
            encode = self._encoder(records, [outputs])
            records.append({"kind": "outputs", "outputs": encode(outputs)})

        self._append(build)

    def compact(self) -> Checkpoint:
        """Fold the journal into the checkpoint file atomically and bump the serial."""
        raw = self._read_raw()
        raw.serial += 1
        document = {
            "version": CHECKPOINT_VERSION,
            "checkpoint": {"stack": self._qualified_name(), "latest": self._deployment(raw)},
            _EXTENSION_KEY: {"serial": raw.serial, "outputs": raw.outputs if raw.outputs is not None else {}},
        }
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._ensure_meta()
            atomic_write(self.path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
            # After the checkpoint is durable, the journal is stale (its header names the old serial).
            self.journal_path.unlink(missing_ok=True)
            _fsync_dir(self.dir)
        except OSError as exc:
            raise StateError(f"cannot write the state file {self.path}: {exc.strerror}") from exc
        return self.load()

    def export(self) -> dict[str, Any]:
        """Pulumi's untyped deployment (`pulumi stack export` shape), secrets encrypted."""
        return {"version": CHECKPOINT_VERSION, "deployment": self._deployment(self._read_raw())}

    # ----- reading -----------------------------------------------------------------------------

    def _read_checkpoint(self, raw: _RawState) -> None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc.strerror}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"the state file {self.path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
            version = doc.get("version") if isinstance(doc, dict) else None
            raise StateError(
                f"the state file {self.path} has checkpoint version {version!r}; this tool reads version 3"
            )
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

    def _journal_records(self, serial: int) -> Iterator[dict[str, Any]]:
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return
        header_seen = False
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # A line torn by a crash: its operation was never acknowledged, so skipping it is right.
                log.warning("ignoring a torn line %d in %s", number, self.journal_path)
                continue
            if not header_seen:
                if record.get("kind") != "header":
                    raise StateError(f"the journal {self.journal_path} has no header; it cannot be replayed safely")
                if int(record.get("serial", -1)) != serial:
                    return  # already folded into the checkpoint by a compaction that crashed before deleting it
                header_seen = True
                continue
            yield record

    def _read_raw(self) -> _RawState:
        raw = _RawState()
        self._read_checkpoint(raw)
        index: _ReplayIndex | None = None
        for record in self._journal_records(raw.serial):
            try:
                if index is None:
                    index = _ReplayIndex(raw.resources)
                _apply_record(raw, index, record)
            except (KeyError, TypeError, AttributeError) as exc:
                raise StateError(f"the journal {self.journal_path} has a malformed record: {exc!r}") from exc
        if index is not None:
            raw.resources = index.resources()
        self._salt = raw.salt
        self._secrets_type = raw.secrets_type
        self._salt_known = True
        return raw

    def _outputs_of(self, raw: _RawState) -> dict[str, Any]:
        if raw.outputs is not None:
            return raw.outputs
        for res in raw.resources:
            if res.get("type") == ROOT_STACK_TYPE and not res.get("parent"):
                return dict(res.get("outputs") or {})
        return {}

    # ----- secrets -----------------------------------------------------------------------------

    def _read_crypter(self, salt: str, secrets_type: str | None) -> Crypter:
        if secrets_type not in (None, SECRETS_PROVIDER_TYPE):
            raise StateError(
                f"stack '{self.stack}' uses the {secrets_type!r} secrets provider; the embedded engine only "
                "supports 'passphrase': use --engine pulumi"
            )
        if self._crypter is not None and self._crypter_salt == salt:
            return self._crypter
        found = find_passphrase(self._passphrase_arg, self.root, self.stack)
        if found is None:
            raise StateError(
                f"stack '{self.stack}' holds encrypted secrets: set GPUSTACK_PASSPHRASE "
                "(or PULUMI_CONFIG_PASSPHRASE) to its passphrase"
            )
        self._crypter = crypter_from_salt_state(found.value, salt, stack=self.stack)
        self._crypter_salt = salt
        return self._crypter

    def _decoder(self, raw: _RawState) -> Transform:
        def decode(tree: Any) -> Any:
            if not has_encrypted_secrets(tree):
                return tree
            if raw.salt is None and raw.secrets_type in (None, SECRETS_PROVIDER_TYPE):
                raise StateError(f"stack '{self.stack}' has encrypted secrets but no secrets provider state")
            return decrypt_tree(tree, self._read_crypter(raw.salt or "", raw.secrets_type))

        return decode

    def _write_crypter(self, records: list[dict[str, Any]]) -> Crypter:
        """The crypter for new secrets; creates the stack's salt (and maybe a passphrase) on first use."""
        if not self._salt_known:
            self._read_raw()
        if self._salt is not None or self._secrets_type not in (None, SECRETS_PROVIDER_TYPE):
            return self._read_crypter(self._salt or "", self._secrets_type)
        found = find_passphrase(self._passphrase_arg, self.root, self.stack)
        if found is None:
            found = create_passphrase_file(self.root, self.stack)
        salt, crypter = new_salt_state(found.value)
        # Journaled ahead of the record that needs it, in the same fsync'd write.
        records.append({"kind": "secrets", "state": {"salt": salt}})
        self._salt, self._crypter, self._crypter_salt = salt, crypter, salt
        self._secrets_type = SECRETS_PROVIDER_TYPE
        return crypter

    def _encoder(self, records: list[dict[str, Any]], trees: list[Any]) -> Transform:
        if not any(has_plain_secrets(t) for t in trees):
            return lambda tree: tree
        crypter = self._write_crypter(records)
        return lambda tree: encrypt_tree(tree, crypter)

    # ----- writing -----------------------------------------------------------------------------

    def _stored_serial(self) -> int:
        raw = _RawState()
        self._read_checkpoint(raw)
        return raw.serial

    def _append(self, build: Callable[[list[dict[str, Any]]], None]) -> None:
        """Journal the records `build` makes (under the write lock: it may create the stack's salt)."""
        try:
            self._append_unchecked(build)
        except OSError as exc:
            raise StateError(f"cannot append to the state journal {self.journal_path}: {exc.strerror}") from exc

    def _append_unchecked(self, build: Callable[[list[dict[str, Any]]], None]) -> None:
        """Write the records `build` makes as one append; return once they are durable.

        Several steps run at once (one per provider call in flight). Each append is written under a
        lock, which keeps lines whole and in order, and then waits for an fsync that started after
        its write: whichever waiting thread gets to fsync first makes every append written so far
        durable, so the others return without one of their own (group commit). No caller returns
        before its record is on disk, as with one fsync per append, but a batch of parallel steps
        shares one flush instead of queueing for one each.
        """
        with self._write_lock:
            records: list[dict[str, Any]] = []
            build(records)
            payload = b"".join(json.dumps(r, separators=(",", ":")).encode("utf-8") + b"\n" for r in records)
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                prefix = b""
                if size == 0:
                    header = {"kind": "header", "version": JOURNAL_VERSION, "serial": self._stored_serial()}
                    prefix = json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n"
                elif os.pread(fd, 1, size - 1) != b"\n":
                    # A crash tore the previous line: end it so it stays one (skipped) line of its own.
                    prefix = b"\n"
                view = memoryview(prefix + payload)
                while view:
                    view = view[os.write(fd, view) :]
                if size == 0:
                    # A new journal: its name must be durable too, before anything is appended after it.
                    os.fsync(fd)
                    _fsync_dir(self.dir)
                self._written += 1
                ticket = self._written
            except BaseException:
                os.close(fd)
                raise
        try:
            self._sync(fd, ticket)
        finally:
            os.close(fd)

    def _sync(self, fd: int, ticket: int) -> None:
        """Make the append numbered `ticket` durable (fsync covers every write to the file before it)."""
        with self._sync_lock:
            if self._synced >= ticket:
                return
            # Every append numbered up to `covered` was written before this fsync starts.
            with self._write_lock:
                covered = self._written
            os.fsync(fd)
            self._synced = covered

    def _ensure_meta(self) -> None:
        meta = self.root / ".pulumi" / "meta.yaml"
        if not meta.exists():
            atomic_write(meta, b"version: 1\n", mode=0o644)

    def _qualified_name(self) -> str:
        return f"organization/{self.project}/{self.stack}"

    def _deployment(self, raw: _RawState) -> dict[str, Any]:
        version = _engine_version()
        resources = _dependency_order(raw.resources)
        if raw.outputs is not None:
            # Pulumi reads stack outputs from the root stack resource: mirror ours there.
            for i, res in enumerate(resources):
                if res.get("type") == ROOT_STACK_TYPE and not res.get("parent"):
                    resources[i] = {**res, "outputs": raw.outputs}
        deployment: dict[str, Any] = {
            "manifest": {
                "time": datetime.now(timezone.utc).isoformat(),
                "magic": hashlib.sha256(version.encode("utf-8")).hexdigest(),
                "version": version,
            },
        }
        if raw.salt is not None:
            deployment["secrets_providers"] = {"type": SECRETS_PROVIDER_TYPE, "state": {"salt": raw.salt}}
        deployment["resources"] = resources
        deployment["pending_operations"] = raw.pending
        return deployment
