"""The state journal: its records, their replay on top of a checkpoint, and durable group-commit appends.

A journal is one JSON line per record: a header naming the checkpoint serial it applies on top
of, then begin / end / outputs / secrets records. Replay skips a journal whose header names
another serial (a compaction that crashed after writing the checkpoint already folded it in) and
lines torn by a crash (their operation was never acknowledged). Appends from parallel steps share
fsyncs (group commit) without any of them returning before its record is on disk.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gpustack_iac.engine.atomic import fsync_dir
from gpustack_iac.engine.checkpoint import RawState
from gpustack_iac.engine.secrets import SECRETS_PROVIDER_TYPE
from gpustack_iac.errors import StateError

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1

# ----- records -----------------------------------------------------------------------------------


def begin_record(resource: dict[str, Any], op_type: str) -> dict[str, Any]:
    return {"kind": "begin", "op": {"resource": resource, "type": op_type}}


def end_record(urn: str, resource: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": "end", "urn": urn, "resource": resource}


def outputs_record(outputs: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "outputs", "outputs": outputs}


def secrets_record(salt: str) -> dict[str, Any]:
    return {"kind": "secrets", "state": {"salt": salt}}


# ----- replay ------------------------------------------------------------------------------------


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


def _apply_end(raw: RawState, index: _ReplayIndex, urn: str, new: dict[str, Any] | None) -> None:
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
            target = (doomed or entries)[0] if doomed or entries else None
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


def _apply_record(raw: RawState, index: _ReplayIndex, record: dict[str, Any]) -> None:
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


def apply_records(raw: RawState, records: list[dict[str, Any]]) -> None:
    """Apply journal records to `raw` in place (remote state applies each step this way, with no journal)."""
    index = _ReplayIndex(raw.resources)
    for record in records:
        _apply_record(raw, index, record)
    raw.resources = index.resources()


def _journal_records(path: Path, serial: int) -> Iterator[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"cannot read the state journal {path}: {exc.strerror}") from exc
    header_seen = False
    lines = [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    for number, line in lines:
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            # A line torn by a crash: its operation was never acknowledged, so skipping it is right.
            log.warning("ignoring a torn line %d in %s", number, path)
            continue
        if not isinstance(record, dict):
            raise _damaged_journal(path, f"line {number} is not a record")
        if not header_seen:
            if record.get("kind") != "header":
                raise _damaged_journal(path, "it has no header")
            header_serial = record.get("serial")
            if not isinstance(header_serial, int) or isinstance(header_serial, bool):
                raise _damaged_journal(path, f"its header names serial {header_serial!r}")
            if header_serial != serial:
                return  # already folded into the checkpoint by a compaction that crashed before deleting it
            header_seen = True
            continue
        yield record
    # One unterminated line is the first append torn by a crash (nothing was acknowledged); more is damage.
    if lines and not header_seen and not (len(lines) == 1 and not data.endswith(b"\n")):
        raise _damaged_journal(path, "no line of it can be read")


def _damaged_journal(path: Path, why: str) -> StateError:
    return StateError(
        f"the state journal {path} is damaged ({why}): it holds the operations since the last compaction and "
        "cannot be replayed safely. Move it aside and run `gpustack-iac refresh` to read the resources back "
        "(those the lost operations created are then no longer recorded: check them with `gpustack-iac status`)."
    )


def replay_journal(path: Path, raw: RawState) -> None:
    """Apply the journal at `path`, if it belongs on top of `raw`'s serial, to `raw` in place."""
    index: _ReplayIndex | None = None
    for record in _journal_records(path, raw.serial):
        try:
            if index is None:
                index = _ReplayIndex(raw.resources)
            _apply_record(raw, index, record)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _damaged_journal(path, f"a malformed record: {exc!r}") from exc
    if index is not None:
        raw.resources = index.resources()


# ----- appending ---------------------------------------------------------------------------------


class JournalWriter:
    """Durable appends to one journal file, shared by the parallel steps of an operation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Group commit of journal appends from parallel steps (see _append_unchecked).
        self._write_lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._written = 0
        self._synced = 0

    def append(self, build: Callable[[list[dict[str, Any]]], None], stored_serial: Callable[[], int]) -> None:
        """Journal the records `build` makes (under the write lock: it may create the stack's salt).

        `stored_serial` gives the checkpoint serial for the header of a new journal.
        """
        try:
            self._append_unchecked(build, stored_serial)
        except OSError as exc:
            raise StateError(f"cannot append to the state journal {self.path}: {exc.strerror}") from exc

    def _append_unchecked(
        self, build: Callable[[list[dict[str, Any]]], None], stored_serial: Callable[[], int]
    ) -> None:
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                prefix = b""
                if size == 0:
                    header = {"kind": "header", "version": JOURNAL_VERSION, "serial": stored_serial()}
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
                    fsync_dir(self.path.parent)
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
