"""Stack state in a remote store (S3, GCS, Azure Blob, PostgreSQL), in Pulumi's DIY layout.

    .pulumi/meta.yaml                                     "version: 1": the project-scoped layout
    .pulumi/stacks/<project>/<stack>.json                 checkpoint version 3, rewritten after every step
    .pulumi/history/<project>/<stack>/<stack>-<ns>.history.json      each operation's record (engine/history.py)
    .pulumi/history/<project>/<stack>/<stack>-<ns>.checkpoint.json   the checkpoint at the end of each operation
    .pulumi/locks/organization/<project>/<stack>/gpustack-iac.json   the lock (remote/lock.py)

As Pulumi's DIY backend does, each step rewrites the whole checkpoint, pending operation included:
a runner that dies (a CI job cancelled, a machine gone) leaves nothing behind that the next runner
lacks. Steps running in parallel share writes: a step returns once a write that began after its
record was applied has finished (group commit, as the file journal's fsyncs), so a batch of
parallel steps costs one upload, not one each. The file store keeps its O(1)-per-step journal;
an object store has no append, so here a step costs one upload of the checkpoint.

Secrets are encrypted as in file state; the passphrase must come from the environment, since a
generated passphrase file would stay on the runner that made it.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpustack_iac.engine.checkpoint import RawState, checkpoint_bytes, checkpoint_document, parse_checkpoint
from gpustack_iac.engine.journal import apply_records
from gpustack_iac.engine.history import CHECKPOINT_SUFFIX, HISTORY_SUFFIX, UpdateRecord, entry_prefix
from gpustack_iac.engine.lock import LockOwner
from gpustack_iac.engine.remote import lock as remote_lock
from gpustack_iac.engine.remote.objects import ObjectStore
from gpustack_iac.engine.remote.open import open_object_store
from gpustack_iac.engine.secrets import PASSPHRASE_ENV_VARS, Passphrase
from gpustack_iac.engine.state import Checkpoint, StateStore
from gpustack_iac.errors import StateError

META_KEY = ".pulumi/meta.yaml"


def checkpoint_key(project: str, stack: str) -> str:
    return f".pulumi/stacks/{project}/{stack}.json"


def history_prefix(project: str, stack: str) -> str:
    return f".pulumi/history/{project}/{stack}/"


def list_stacks(objects: ObjectStore) -> list[tuple[str, str]]:
    """(project, stack) of every checkpoint in the store."""
    found = set()
    for key in objects.list(".pulumi/stacks/"):
        parts = key[len(".pulumi/stacks/"):].split("/")
        if len(parts) == 2 and parts[1].endswith(".json"):
            found.add((parts[0], parts[1][: -len(".json")]))
    return sorted(found)


class RemoteStateStore(StateStore):
    """StateStore's operations over an ObjectStore; the secrets and record logic are the file store's."""

    def __init__(self, url: str, project: str, stack: str, passphrase: str | None = None,
                 objects: ObjectStore | None = None) -> None:
        # The file store's root only names a local passphrase file, which remote state never uses.
        super().__init__(Path.cwd(), project, stack, passphrase)
        self.url = url
        self.objects = objects if objects is not None else open_object_store(url)
        self.key = checkpoint_key(project, stack)
        self._raw: RawState | None = None  # the working state while this store holds the lock
        self._write_lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._applied = 0
        self._flushed = 0
        self._dirty = False
        self._meta_written = False

    def describe(self) -> str:
        return f"{self.objects.describe()}/{self.key}"

    def exists(self) -> bool:
        return self.objects.get(self.key) is not None

    def needs_compaction(self) -> bool:
        return self._dirty

    def remove(self) -> None:
        """Delete the stack's checkpoint and its history; the caller holds the lock."""
        for key in self.objects.list(history_prefix(self.project, self.stack)):
            self.objects.delete(key)
        self.objects.delete(self.key)

    # ----- lock --------------------------------------------------------------------------------

    @contextmanager
    def lock(self, operation: str) -> Iterator[None]:
        with remote_lock.hold(self.objects, self.project, self.stack, operation):
            self._operation = operation
            self._raw = None
            try:
                yield
            finally:
                self._operation = None
                self._raw = None

    def lock_owner(self) -> LockOwner | None:
        found = remote_lock.read_owner(self.objects, self.project, self.stack)
        return found[1] if found else None

    def unlock(self, force: bool = False) -> LockOwner | None:
        return remote_lock.clear(self.objects, self.project, self.stack, force)

    # ----- reading -----------------------------------------------------------------------------

    def _fetch(self) -> RawState:
        data = self.objects.get(self.key)
        try:
            raw = RawState() if data is None else parse_checkpoint(data, Path(self.describe()))
        except StateError as exc:
            raise StateError(
                f"the state at {self.describe()} is damaged ({exc}); `gpustack-iac state restore` puts back "
                "the copy written at the end of the last operation"
            ) from None
        self._salt, self._secrets_type, self._salt_known = raw.salt, raw.secrets_type, True
        return raw

    def _read_raw(self) -> RawState:
        with self._write_lock:
            if self._operation is None:
                return self._fetch()
            if self._raw is None:
                self._raw = self._fetch()
            # A copy: callers (load, export) must not see later steps change what they were given.
            return copy.deepcopy(self._raw)

    def _working(self) -> RawState:
        if self._raw is None:
            self._raw = self._fetch()
        return self._raw

    # ----- writing -----------------------------------------------------------------------------

    def _append(self, build: Callable[[list[dict[str, Any]]], None]) -> None:
        with self._write_lock:
            raw = self._working()
            records: list[dict[str, Any]] = []
            build(records)
            apply_records(raw, records)
            self._applied += 1
            self._dirty = True
            ticket = self._applied
        self._flush(ticket)

    def _flush(self, ticket: int) -> None:
        with self._sync_lock:
            if self._flushed >= ticket:
                return
            with self._write_lock:
                covered = self._applied
                data = checkpoint_bytes(checkpoint_document(self._qualified_name(), self._working()))
            self._ensure_meta()
            self.objects.put(self.key, data)
            self._flushed = covered

    def compact(self) -> Checkpoint:
        """End of an operation: bump the serial, write the checkpoint and its copy in the history."""
        with self._write_lock:
            raw = self._working()
            raw.serial += 1
            data = checkpoint_bytes(checkpoint_document(self._qualified_name(), raw))
        with self._sync_lock:
            self._ensure_meta()
            self.objects.put(self.key, data)
        self._dirty = False
        return self.load()

    def add_history(self, record: UpdateRecord) -> None:
        """The update's record and the checkpoint's copy beside it, as Pulumi's addToHistory writes them."""
        current = self.objects.get(self.key)
        if current is None:
            return
        prefix = entry_prefix(self.project, self.stack, time.time_ns())
        self.objects.put(prefix + HISTORY_SUFFIX, record.to_json())
        self.objects.put(prefix + CHECKPOINT_SUFFIX, current)

    def history(self) -> list[UpdateRecord]:
        keys = sorted(k for k in self.objects.list(history_prefix(self.project, self.stack)) if k.endswith(HISTORY_SUFFIX))
        found = ((k, self.objects.get(k)) for k in reversed(keys))
        return [UpdateRecord.from_json(data) for _, data in found if data is not None]

    def restore_backup(self) -> tuple[Path, Path | None]:
        """Put the newest history copy back as the checkpoint (the current one is kept in the history too)."""
        copies = sorted(k for k in self.objects.list(history_prefix(self.project, self.stack)) if k.endswith(".checkpoint.json"))
        if not copies:
            raise StateError(f"there is no copy to restore: {self.objects.describe()} has no history for this stack")
        data = self.objects.get(copies[-1]) or b""
        parse_checkpoint(data, Path(copies[-1]))  # never restore a damaged copy
        current = self.objects.get(self.key)
        aside: Path | None = None
        if current is not None:
            aside = Path(f"{history_prefix(self.project, self.stack)}{self.stack}-{time.time_ns()}.damaged.json")
            self.objects.put(str(aside), current)
        self.objects.put(self.key, data)
        return Path(copies[-1]), aside

    def _stored_serial(self) -> int:
        return self._working().serial

    def _ensure_meta(self) -> None:
        if not self._meta_written:
            if self.objects.get(META_KEY) is None:
                self.objects.create(META_KEY, b"version: 1\n")
            self._meta_written = True

    # ----- secrets -----------------------------------------------------------------------------

    def _find_passphrase(self) -> Passphrase | None:
        if self._passphrase_arg is not None:
            return Passphrase(self._passphrase_arg, "argument")
        for name in PASSPHRASE_ENV_VARS:
            value = os.environ.get(name)
            if value is not None:
                return Passphrase(value, name)
        return None

    def _new_passphrase(self) -> Passphrase:
        raise StateError(
            f"stack '{self.stack}' keeps its state at {self.objects.describe()} and needs a secrets passphrase: "
            "set GPUSTACK_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE) on every machine that runs it"
        )
