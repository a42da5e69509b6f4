"""The `gs://` lock's primitive, Cloud Storage's generation preconditions, through the real
google-cloud-storage client against a strict stand-in (tests/support/strict_gcs.py: a proxy that
enforces them in front of gcp-storage-emulator, which does not — checked here too).

The lock itself (two concurrent `up`s, a stale lock taken over) runs on `gs://` in test_remote_state.py
against the same stand-in.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpustack_iac.engine.remote.open import open_object_store
from tests.support.standins import Gcs, _env, gcs_emulator


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gcs]:
    with gcs_emulator(tmp_path_factory.mktemp("gcs-strict")) as running:
        yield running


@pytest.fixture()
def bucket(gcs: Gcs, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    name = f"strict-{uuid.uuid4().hex[:12]}"
    gcs.url(name)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.env["STORAGE_EMULATOR_HOST"])
    return storage.Client(project="local", credentials=AnonymousCredentials()).bucket(name)


def test_the_emulator_alone_ignores_generation_preconditions(gcs: Gcs, tmp_path: Path) -> None:
    """Why the proxy exists: straight to gcp-storage-emulator, a second create-if-absent overwrites."""
    name = f"direct-{uuid.uuid4().hex[:12]}"
    url = gcs.url(name)
    with _env({"STORAGE_EMULATOR_HOST": gcs.direct}):
        objects = open_object_store(url)
        assert objects.create("probe", b"first") is True
        assert objects.create("probe", b"second") is True, "gcp-storage-emulator began enforcing ifGenerationMatch"
        assert objects.get("probe") == b"second"


def test_create_if_absent_then_conditional_overwrite_and_delete(bucket) -> None:  # type: ignore[no-untyped-def]
    from google.api_core.exceptions import PreconditionFailed

    blob = bucket.blob("lock.json")
    blob.upload_from_string(b"mine", if_generation_match=0)
    first = bucket.get_blob("lock.json").generation
    with pytest.raises(PreconditionFailed):
        bucket.blob("lock.json").upload_from_string(b"theirs", if_generation_match=0)
    assert bucket.blob("lock.json").download_as_bytes() == b"mine"

    with pytest.raises(PreconditionFailed):  # a stale generation
        bucket.blob("lock.json").upload_from_string(b"stale", if_generation_match=first + 1)
    with pytest.raises(PreconditionFailed):  # "unless it is still this one"
        bucket.blob("lock.json").upload_from_string(b"changed", if_generation_not_match=first)
    bucket.blob("lock.json").upload_from_string(b"next", if_generation_match=first)
    second = bucket.get_blob("lock.json").generation
    assert second != first

    with pytest.raises(PreconditionFailed):
        bucket.blob("lock.json").delete(if_generation_match=first)
    assert bucket.blob("lock.json").download_as_bytes() == b"next"
    bucket.blob("lock.json").delete(if_generation_match=second)
    assert bucket.get_blob("lock.json") is None
    bucket.blob("lock.json").upload_from_string(b"again", if_generation_match=0)  # absent again: 0 matches


def test_racing_creates_exactly_one_wins(gcs: Gcs, bucket, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The store's `create` from many threads at once, as several runners taking the lock would."""
    objects = open_object_store(f"gs://{bucket.name}/team")
    start = threading.Barrier(8)
    results: dict[int, bool] = {}

    def attempt(i: int) -> None:
        start.wait(timeout=60)
        results[i] = objects.create("race", f"runner {i}".encode())

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [i for i, won in results.items() if won]
    assert len(results) == 8 and len(winners) == 1, results
    assert objects.get("race") == f"runner {winners[0]}".encode()


def test_a_lock_taken_over_meanwhile_is_not_removed_by_its_old_holder(bucket) -> None:  # type: ignore[no-untyped-def]
    """The store deletes what it created only at that generation: after a forced takeover (the old
    lock removed, a new one created), the old holder's release leaves the new lock alone."""
    url = f"gs://{bucket.name}/team"
    old_holder, new_holder = open_object_store(url), open_object_store(url)
    assert old_holder.create("lock.json", b"old holder")
    new_holder.delete("lock.json")  # `state unlock --force` from another runner
    assert new_holder.create("lock.json", b"new holder")
    old_holder.delete("lock.json")  # the old holder finishes and releases "its" lock
    assert new_holder.get("lock.json") == b"new holder"
    new_holder.delete("lock.json")
    assert new_holder.get("lock.json") is None
