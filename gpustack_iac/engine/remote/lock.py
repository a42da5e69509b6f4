"""The stack's lock in an object store: an object created with the store's atomic primitive.

It lives where Pulumi's DIY backend keeps its own locks (`.pulumi/locks/organization/<project>/<stack>/`),
so a `pulumi up` against the same bucket sees the stack locked, and a lock Pulumi holds there stops us too.
The owner is recorded as in a lock file (pid, host, start, operation), with Pulumi's field names beside ours;
the stale-lock rules are lock.py's: an owner on this host that is gone may be cleared, anything else needs --force.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone

from gpustack_iac.engine.lock import LockOwner, locked_error, refuse_unless_stale
from gpustack_iac.engine.remote.objects import ObjectStore
from gpustack_iac.errors import StateError

OUR_LOCK = "gpustack-iac.json"


def lock_dir(project: str, stack: str) -> str:
    return f".pulumi/locks/organization/{project}/{stack}/"


def _payload(owner: LockOwner) -> bytes:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    pulumi_fields = {
        "username": user,
        "hostname": owner.host,
        "timestamp": datetime.fromtimestamp(owner.started_at, tz=timezone.utc).isoformat(),
    }
    return json.dumps({**asdict(owner), **pulumi_fields}, sort_keys=True).encode("utf-8")


def _parse(data: bytes) -> LockOwner:
    doc = json.loads(data)
    if "started_at" in doc:
        return LockOwner(int(doc["pid"]), str(doc["host"]), float(doc["started_at"]), str(doc.get("operation", "")))
    # A lock Pulumi's CLI took: its own field names.
    stamp = datetime.fromisoformat(str(doc["timestamp"]).replace("Z", "+00:00")).timestamp()
    return LockOwner(int(doc["pid"]), str(doc["hostname"]), stamp, "pulumi")


def read_owner(objects: ObjectStore, project: str, stack: str) -> tuple[str, LockOwner | None] | None:
    """The first lock object of the stack and its owner (None: unreadable); None when unlocked."""
    for key in sorted(objects.list(lock_dir(project, stack))):
        data = objects.get(key)
        if data is None:
            continue  # removed between the listing and the read
        try:
            return key, _parse(data)
        except (ValueError, KeyError, TypeError):
            return key, None
    return None


@contextmanager
def hold(objects: ObjectStore, project: str, stack: str, operation: str) -> Iterator[LockOwner]:
    owner = LockOwner(pid=os.getpid(), host=socket.gethostname(), started_at=time.time(), operation=operation)
    key = lock_dir(project, stack) + OUR_LOCK
    payload = _payload(owner)
    if not objects.create(key, payload):
        found = read_owner(objects, project, stack)
        raise locked_error(stack, found[1] if found else None)
    # A lock Pulumi's CLI holds has another name: seeing one after taking ours, back off.
    others = [k for k in objects.list(lock_dir(project, stack)) if k != key]
    if others:
        objects.delete(key)
        found = read_owner(objects, project, stack)
        raise locked_error(stack, found[1] if found else None)
    try:
        yield owner
    finally:
        # Only remove a lock that is still ours (a forced unlock may have handed it to someone else).
        if objects.get(key) == payload:
            objects.delete(key)


def clear(objects: ObjectStore, project: str, stack: str, force: bool) -> LockOwner | None:
    found = read_owner(objects, project, stack)
    if found is None:
        return None
    key, owner = found
    if owner is None and not force:
        raise StateError(f"the lock of stack '{stack}' ({key}) is unreadable; if no other run is going on, use --force")
    if owner is not None and not force:
        refuse_unless_stale(stack, owner)
    for other in objects.list(lock_dir(project, stack)):
        objects.delete(other)
    return owner
