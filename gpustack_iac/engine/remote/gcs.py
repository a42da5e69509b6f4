"""Google Cloud Storage: google-cloud-storage, locking with `ifGenerationMatch=0` (create only if absent);
an object this store created is deleted only while it still has the generation it was created with.

`STORAGE_EMULATOR_HOST` points the client at an emulator, as Google's client does itself.
"""

from __future__ import annotations

import os

from gpustack_iac.engine.remote.objects import Location, require
from gpustack_iac.errors import StateError


class GcsStore:
    def __init__(self, location: Location) -> None:
        storage = require("google.cloud.storage", "state-gcs")
        self._exc = require("google.api_core.exceptions", "state-gcs")
        self.location = location
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            # The emulator needs no credentials; the project only labels requests.
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(project=location.options.get("project", "local"), credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        else:
            client = storage.Client()
        self._bucket = client.bucket(location.bucket)
        # The generation of each object this store created (the lock): deleting it is conditional
        # on that generation, so a lock someone else took over meanwhile is never removed.
        self._created: dict[str, int] = {}

    def describe(self) -> str:
        return f"gs://{self.location.bucket}/{self.location.prefix}".rstrip("/")

    def _fail(self, what: str, key: str, exc: Exception) -> StateError:
        return StateError(f"cannot {what} gs://{self.location.bucket}/{self.location.key(key)}: {exc}")

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self._bucket.blob(self.location.key(key)).download_as_bytes())
        except self._exc.NotFound:
            return None
        except self._exc.GoogleAPIError as exc:
            raise self._fail("read", key, exc) from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self._bucket.blob(self.location.key(key)).upload_from_string(data)
        except self._exc.GoogleAPIError as exc:
            raise self._fail("write", key, exc) from None

    def create(self, key: str, data: bytes) -> bool:
        try:
            blob = self._bucket.blob(self.location.key(key))
            blob.upload_from_string(data, if_generation_match=0)
            if blob.generation is not None:
                self._created[key] = int(blob.generation)
            return True
        except self._exc.PreconditionFailed:
            return False
        except self._exc.GoogleAPIError as exc:
            raise self._fail("create", key, exc) from None

    def delete(self, key: str) -> None:
        generation = self._created.pop(key, None)
        try:
            self._bucket.blob(self.location.key(key)).delete(if_generation_match=generation)
        except self._exc.NotFound:
            pass
        except self._exc.PreconditionFailed:
            pass  # no longer the object this store created: someone else's now, left alone
        except self._exc.GoogleAPIError as exc:
            raise self._fail("delete", key, exc) from None

    def list(self, prefix: str) -> list[str]:
        strip = len(self.location.key(""))
        try:
            return [str(b.name)[strip:] for b in self._bucket.list_blobs(prefix=self.location.key(prefix))]
        except self._exc.GoogleAPIError as exc:
            raise self._fail("list", prefix, exc) from None
