"""Azure Blob Storage: azure-storage-blob, locking with a conditional create (`If-None-Match: *`).

The account comes from the environment as Pulumi's `azblob://` backend takes it: `AZURE_STORAGE_ACCOUNT`
with `AZURE_STORAGE_KEY` (or `AZURE_STORAGE_SAS_TOKEN`, or the default Azure credential), or a whole
`AZURE_STORAGE_CONNECTION_STRING` (what Azurite is reached with).
"""

from __future__ import annotations

import os
from typing import Any

from gpustack_iac.engine.remote.objects import Location, require
from gpustack_iac.errors import StateError


def _service(blob: Any) -> Any:
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if conn:
        return blob.BlobServiceClient.from_connection_string(conn)
    account = os.environ.get("AZURE_STORAGE_ACCOUNT")
    if not account:
        raise StateError("an azblob:// state location needs AZURE_STORAGE_ACCOUNT (or AZURE_STORAGE_CONNECTION_STRING)")
    url = f"https://{account}.blob.core.windows.net"
    credential: Any = os.environ.get("AZURE_STORAGE_KEY") or os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if credential is None:
        credential = require("azure.identity", "state-azure").DefaultAzureCredential()
    elif "AZURE_STORAGE_KEY" in os.environ:
        credential = {"account_name": account, "account_key": credential}
    return blob.BlobServiceClient(account_url=url, credential=credential)


class AzureBlobStore:
    def __init__(self, location: Location) -> None:
        blob = require("azure.storage.blob", "state-azure")
        self._exc = require("azure.core.exceptions", "state-azure")
        self.location = location
        self._container = _service(blob).get_container_client(location.bucket)

    def describe(self) -> str:
        return f"azblob://{self.location.bucket}/{self.location.prefix}".rstrip("/")

    def _fail(self, what: str, key: str, exc: Exception) -> StateError:
        return StateError(f"cannot {what} azblob://{self.location.bucket}/{self.location.key(key)}: {exc}")

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self._container.download_blob(self.location.key(key)).readall())
        except self._exc.ResourceNotFoundError:
            return None
        except self._exc.AzureError as exc:
            raise self._fail("read", key, exc) from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self._container.upload_blob(self.location.key(key), data, overwrite=True)
        except self._exc.AzureError as exc:
            raise self._fail("write", key, exc) from None

    def create(self, key: str, data: bytes) -> bool:
        try:
            # overwrite=False sends If-None-Match: * (the service refuses when the blob exists).
            self._container.upload_blob(self.location.key(key), data, overwrite=False)
            return True
        except self._exc.ResourceExistsError:
            return False
        except self._exc.AzureError as exc:
            raise self._fail("create", key, exc) from None

    def delete(self, key: str) -> None:
        try:
            self._container.delete_blob(self.location.key(key))
        except self._exc.ResourceNotFoundError:
            pass
        except self._exc.AzureError as exc:
            raise self._fail("delete", key, exc) from None

    def list(self, prefix: str) -> list[str]:
        strip = len(self.location.key(""))
        try:
            return [str(b.name)[strip:] for b in self._container.list_blobs(name_starts_with=self.location.key(prefix))]
        except self._exc.AzureError as exc:
            raise self._fail("list", prefix, exc) from None
