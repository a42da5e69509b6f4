"""The one place a remote state URL picks its store (each store module loads its SDK only when used)."""

from __future__ import annotations

from gpustack_iac.engine.remote.objects import ObjectStore, parse_location
from gpustack_iac.errors import StateError


def open_object_store(url: str) -> ObjectStore:
    location = parse_location(url)
    if location.scheme == "s3":
        from gpustack_iac.engine.remote.s3 import S3Store

        return S3Store(location)
    if location.scheme == "gs":
        from gpustack_iac.engine.remote.gcs import GcsStore

        return GcsStore(location)
    if location.scheme == "azblob":
        from gpustack_iac.engine.remote.azblob import AzureBlobStore

        return AzureBlobStore(location)
    if location.scheme == "postgres":
        from gpustack_iac.engine.remote.postgres import PostgresStore

        return PostgresStore(location)
    raise StateError(f"unknown state location scheme {location.scheme}://")
