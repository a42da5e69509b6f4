"""Stack state in Pulumi's checkpoint format, with an append-only journal and a lock.

On disk (the layout of Pulumi's file backend, project-scoped, so `pulumi login file://<root>` reads it):

    <root>/.pulumi/meta.yaml                          "version: 1" marks the project-scoped layout
    <root>/.pulumi/stacks/<project>/<stack>.json      versioned checkpoint (version 3), written atomically
    <root>/.pulumi/stacks/<project>/<stack>.json.bak  the same checkpoint, a second copy for recovery
    <root>/.pulumi/stacks/<project>/<stack>.journal.jsonl   one fsync'd JSON line per begin / end / outputs
    <root>/.pulumi/stacks/<project>/<stack>.lock      owner of the running operation

Every step appends one line to the journal (O(1)); `compact()` folds the journal into the
checkpoint once, at the end of an operation or on the next run after a crash, and writes a copy
of it beside (`state restore` puts the copy back if the checkpoint is damaged). The journal's
header names the checkpoint serial it applies on top of, so a crash between writing a compacted
checkpoint and deleting the journal never applies the journal twice.

Secret values are encrypted before anything touches the disk (see secrets.py); the in-memory
form is {SECRET_SIG_KEY: SECRET_SIG, "value": plain}.

This module holds the typed state (ResourceState, PendingOperation, Checkpoint), its mapping to
ResourceV3 JSON, and the StateStore that ties the pieces together; the checkpoint document is
checkpoint.py's, the journal journal.py's, and crash-safe file writes atomic.py's.
"""

from __future__ import annotations

import dataclasses
import re
import time
import secrets as pysecrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpustack_iac.engine import lock as lockfile
from gpustack_iac.engine.atomic import atomic_write, fsync_dir
from gpustack_iac.engine.checkpoint import (
    CHECKPOINT_VERSION,
    RawState,
    backup_path,
    check_against_backup,
    checkpoint_bytes,
    checkpoint_document,
    deployment,
    parse_checkpoint,
    read_checkpoint,
    stack_outputs,
)
from gpustack_iac.engine.journal import (
    JournalWriter,
    abandoned_record,
    begin_record,
    end_record,
    outputs_record,
    replay_journal,
    secrets_record,
)
from gpustack_iac.engine.history import CHECKPOINT_SUFFIX, HISTORY_SUFFIX, UpdateRecord, entry_prefix, history_dir
from gpustack_iac.engine.lock import LockOwner
from gpustack_iac.engine.remote.objects import REMOTE_SCHEMES
from gpustack_iac.engine.secrets import (
    FINGERPRINT_PURPOSE,
    SECRETS_PROVIDER_TYPE,
    Crypter,
    Passphrase,
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

OPERATION_TYPES = ("creating", "updating", "deleting", "reading")
DEFAULT_STATE_URL = "file://.gpustack/state"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


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


@dataclass(frozen=True)
class Abandoned:
    """A resource dropped from state without deleting what it stands for (its host was gone for good)."""

    urn: str
    type: str
    id: str
    reason: str
    at: str  # ISO time

    @staticmethod
    def from_json(data: dict[str, Any]) -> Abandoned:
        return Abandoned(*(str(data.get(k, "")) for k in ("urn", "type", "id", "reason", "at")))


@dataclass
class Checkpoint:
    stack: str
    project: str
    resources: list[ResourceState]
    pending_operations: list[PendingOperation]
    outputs: dict[str, Any]
    serial: int
    abandoned: list[Abandoned] = field(default_factory=list)

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
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise StateError(f"a resource in the state is malformed: {exc!r}") from exc


def _check_name(kind: str, name: str) -> None:
    if not name or not _NAME_RE.match(name) or name in (".", ".."):
        raise StateError(f"{kind} name {name!r} is not valid: use letters, digits, '-', '_' and '.'")


class StateStore:
    """The state of one stack of one project, under a file-backend root.

    RemoteStateStore (engine/remote/store.py) implements the same operations over an object store or
    PostgreSQL; the engine and the commands use only these public methods, and open either through
    engine/stores.py's `open_store(url, ...)`.
    """

    def __init__(self, root: Path, project: str, stack: str, passphrase: str | None = None) -> None:
        _check_name("project", project)
        _check_name("stack", stack)
        self.root = Path(root)
        self.project = project
        self.stack = stack
        self._passphrase_arg = passphrase
        self.dir = self.root / ".pulumi" / "stacks" / project
        self.path = self.dir / f"{stack}.json"
        self.backup_path = backup_path(self.path)
        self.journal_path = self.dir / f"{stack}.journal.jsonl"
        self.lock_path = self.dir / f"{stack}.lock"
        self._salt: str | None = None
        self._secrets_type: str | None = None
        self._salt_known = False
        self._crypter: Crypter | None = None
        self._crypter_salt: str | None = None
        self._journal = JournalWriter(self.journal_path)
        self._operation: str | None = None  # the operation this store holds the stack's lock for
        self._ephemeral_key = pysecrets.token_bytes(32)

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
        if scheme in REMOTE_SCHEMES:
            raise StateError(f"internal error: {scheme}:// state is opened by engine.stores.open_store")
        raise StateError(
            f"unknown state location scheme {scheme}://: use file://, s3://, gs://, azblob:// or postgres://"
        )

    def exists(self) -> bool:
        return self.path.exists() or self.journal_path.exists() or self.backup_path.exists()

    def describe(self) -> str:
        """Where the checkpoint lives, for messages."""
        return str(self.path)

    def deployed(self) -> int:
        """How many resources the stack holds (a destroyed or never-applied stack holds none).

        Counts custom resources and open operations, from the stored form: no secret is decrypted.
        """
        raw = self._read_raw()
        return sum(1 for r in raw.resources if r.get("custom")) + len(raw.pending)

    def remove(self) -> None:
        """Delete the stack's state (checkpoint, copy, journal, history); the caller holds the lock."""
        history = self.root / history_dir(self.project, self.stack)
        for path in (self.path, self.backup_path, self.journal_path, *sorted(history.glob("*"))):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StateError(f"cannot remove {path}: {exc.strerror}") from exc

    def needs_compaction(self) -> bool:
        """Whether steps were recorded since the checkpoint was last written whole."""
        return self.journal_path.exists()

    def load(self) -> Checkpoint:
        """The current state: the checkpoint with any journal left by a crash replayed on top."""
        raw = self._read_raw()
        decode = self._decoder(raw)
        resources = [resource_from_json(r, decode) for r in raw.resources]
        pending: list[PendingOperation] = []
        for op in raw.pending:
            pending.append(PendingOperation(resource_from_json(op.get("resource", {}), decode), str(op.get("type"))))
        outputs = stack_outputs(raw)
        return Checkpoint(
            stack=self.stack,
            project=self.project,
            resources=resources,
            pending_operations=pending,
            outputs=dict(decode(outputs)),
            serial=raw.serial,
            abandoned=[Abandoned.from_json(a) for a in raw.abandoned],
        )

    @contextmanager
    def lock(self, operation: str) -> Iterator[None]:
        with lockfile.hold(self.lock_path, self.stack, operation):
            self._operation = operation
            try:
                yield
            finally:
                self._operation = None

    def fingerprint_key(self) -> bytes:
        """The stack's key for fingerprints of values kept out of the plaintext state (see StackContext).

        Derived from the stack's secrets key. A stack without one yet gets it here only while this
        store holds the lock for a change (an `up`'s program); a plan of a new stack, with nothing
        stored to compare against, uses a random key that is never written.
        """
        if not self._salt_known:
            self._read_raw()
        if self._salt is None and self._secrets_type in (None, SECRETS_PROVIDER_TYPE):
            if self._operation in (None, "preview"):
                return self._ephemeral_key
            def write(records: list[dict[str, Any]]) -> None:
                self._write_crypter(records)

            self._append(write)
        return self._read_crypter(self._salt or "", self._secrets_type).derive_key(FINGERPRINT_PURPOSE)

    def secrets_crypter(self) -> Crypter:
        """The stack's secrets crypter, for values kept beside the checkpoint (run secrets); the
        stack's salt (and passphrase file) is made on first use, which needs the stack's lock."""
        if not self._salt_known:
            self._read_raw()
        if self._salt is None and self._secrets_type in (None, SECRETS_PROVIDER_TYPE):
            if self._operation is None:
                raise StateError("internal error: creating the stack's secrets key needs the stack's lock")
            def make_key(records: list[dict[str, Any]]) -> None:
                self._write_crypter(records)

            self._append(make_key)
        return self._read_crypter(self._salt or "", self._secrets_type)

    def lock_owner(self) -> LockOwner | None:
        return lockfile.read_owner(self.lock_path)

    def unlock(self, force: bool = False) -> LockOwner | None:
        return lockfile.clear(self.lock_path, self.stack, force)

    def begin(self, op: PendingOperation) -> None:
        if op.type not in OPERATION_TYPES:
            raise StateError(f"unknown operation type {op.type!r}: expected one of {', '.join(OPERATION_TYPES)}")

        def build(records: list[dict[str, Any]]) -> None:
            encode = self._encoder(records, [op.resource.inputs, op.resource.outputs])
            records.append(begin_record(resource_to_json(op.resource, encode), op.type))

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
            records.append(begin_record(resource_to_json(op.resource, encode), op.type))
            records.append(end_record(op.resource.urn, resource_to_json(new, encode) if new else None))

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
            records.append(end_record(urn, resource_to_json(new, encode) if new else None))

        self._append(build)

    def abandon(self, res: ResourceState, reason: str) -> Abandoned:
        """Drop `res` from state without touching what it stands for, and record that it was abandoned
        (one append: a delete that ends at once, then the record). The caller holds the lock."""
        entry = Abandoned(urn=res.urn, type=res.type, id=res.id, reason=reason,
                          at=datetime.now(timezone.utc).isoformat(timespec="seconds"))

        def build(records: list[dict[str, Any]]) -> None:
            encode = self._encoder(records, [res.inputs, res.outputs])
            records.append(begin_record(resource_to_json(res, encode), "deleting"))
            records.append(end_record(res.urn, None))
            records.append(abandoned_record(dataclasses.asdict(entry)))

        self._append(build)
        return entry

    def set_outputs(self, outputs: dict[str, Any]) -> None:
        def build(records: list[dict[str, Any]]) -> None:
            encode = self._encoder(records, [outputs])
            records.append(outputs_record(encode(outputs)))

        self._append(build)

    def compact(self) -> Checkpoint:
        """Fold the journal into the checkpoint file atomically and bump the serial."""
        raw = self._read_raw()
        raw.serial += 1
        data = checkpoint_bytes(checkpoint_document(self._qualified_name(), raw))
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._ensure_meta()
            atomic_write(self.path, data)
            # A second copy, so a damaged checkpoint never loses the stack: `state restore` puts it back.
            atomic_write(self.backup_path, data)
            # After the checkpoint is durable, the journal is stale (its header names the old serial).
            self.journal_path.unlink(missing_ok=True)
            fsync_dir(self.dir)
        except OSError as exc:
            raise StateError(f"cannot write the state file {self.path}: {exc.strerror}") from exc
        return self.load()

    # ----- history (Pulumi's DIY layout: engine/history.py) -------------------------------------

    def serial(self) -> int:
        """The stored checkpoint's serial (0 for none), read without decrypting anything."""
        return self._read_raw().serial if self.exists() else 0

    def add_history(self, record: UpdateRecord) -> None:
        """One update's record and a copy of the checkpoint as it ended; the caller holds the lock."""
        if not self.path.exists():
            return  # nothing was ever written: nothing to record
        prefix = self.root / entry_prefix(self.project, self.stack, time.time_ns())
        try:
            prefix.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(prefix.with_name(prefix.name + HISTORY_SUFFIX), record.to_json())
            atomic_write(prefix.with_name(prefix.name + CHECKPOINT_SUFFIX), self.path.read_bytes())
        except OSError as exc:
            raise StateError(f"cannot write the stack's history under {prefix.parent}: {exc.strerror}") from exc

    def history(self) -> list[UpdateRecord]:
        """The stack's update records, newest first."""
        folder = self.root / history_dir(self.project, self.stack)
        names = sorted(folder.glob(f"*{HISTORY_SUFFIX}")) if folder.is_dir() else []
        return [UpdateRecord.from_json(p.read_bytes()) for p in reversed(names)]

    def restore_backup(self) -> tuple[Path, Path | None]:
        """Put the copy written at the last compaction back; returns (the copy, where the replaced file went)."""
        try:
            data = self.backup_path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"there is no copy to restore: {self.backup_path} does not exist") from None
        except OSError as exc:
            raise StateError(f"cannot read {self.backup_path}: {exc.strerror}") from exc
        parse_checkpoint(data, self.backup_path)  # never restore a damaged copy
        aside: Path | None = None
        try:
            if self.path.exists():
                # Copied, not moved: a crash in between must never leave no checkpoint at all.
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
                atomic_write(aside, self.path.read_bytes())
            atomic_write(self.path, data)
        except OSError as exc:
            raise StateError(f"cannot restore {self.path} from {self.backup_path}: {exc.strerror}") from exc
        return self.backup_path, aside

    def export(self) -> dict[str, Any]:
        """Pulumi's untyped deployment (`pulumi stack export` shape), secrets encrypted."""
        return {"version": CHECKPOINT_VERSION, "deployment": deployment(self._read_raw())}

    # ----- reading -----------------------------------------------------------------------------

    def _read_raw(self) -> RawState:
        raw = read_checkpoint(self.path)
        check_against_backup(self.path, raw)
        replay_journal(self.journal_path, raw)
        self._salt = raw.salt
        self._secrets_type = raw.secrets_type
        self._salt_known = True
        return raw

    # ----- secrets -----------------------------------------------------------------------------

    def _read_crypter(self, salt: str, secrets_type: str | None) -> Crypter:
        if secrets_type not in (None, SECRETS_PROVIDER_TYPE):
            raise StateError(
                f"stack '{self.stack}' uses the {secrets_type!r} secrets provider; the embedded engine only "
                "supports 'passphrase': use --engine pulumi"
            )
        if self._crypter is not None and self._crypter_salt == salt:
            return self._crypter
        found = self._find_passphrase()
        if found is None:
            raise StateError(
                f"stack '{self.stack}' holds encrypted secrets: set GPUSTACK_PASSPHRASE "
                "(or PULUMI_CONFIG_PASSPHRASE) to its passphrase"
            )
        self._crypter = crypter_from_salt_state(found.value, salt, stack=self.stack)
        self._crypter_salt = salt
        return self._crypter

    def _find_passphrase(self) -> Passphrase | None:
        return find_passphrase(self._passphrase_arg, self.root, self.stack)

    def _new_passphrase(self) -> Passphrase:
        return create_passphrase_file(self.root, self.stack)

    def _decoder(self, raw: RawState) -> Transform:
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
        found = self._find_passphrase()
        if found is None:
            found = self._new_passphrase()
        salt, crypter = new_salt_state(found.value)
        # Journaled ahead of the record that needs it, in the same fsync'd write.
        records.append(secrets_record(salt))
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
        return read_checkpoint(self.path).serial

    def _append(self, build: Callable[[list[dict[str, Any]]], None]) -> None:
        # `build` runs under the journal's write lock: it may create the stack's salt, which must be made once.
        self._journal.append(build, self._stored_serial)

    def _ensure_meta(self) -> None:
        meta = self.root / ".pulumi" / "meta.yaml"
        if not meta.exists():
            atomic_write(meta, b"version: 1\n", mode=0o644)

    def _qualified_name(self) -> str:
        return f"organization/{self.project}/{self.stack}"
