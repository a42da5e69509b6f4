"""S3 (and S3-compatible servers): boto3, locking with a conditional PUT (`If-None-Match: *`).

The endpoint comes from boto3's own configuration (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, profiles)
or the URL's `?endpoint=` and `?region=`, as Pulumi's `s3://` backend accepts them.
"""

from __future__ import annotations

from typing import Any

from gpustack_iac.engine.remote.objects import Location, require
from gpustack_iac.errors import StateError

# What S3 answers when the object already exists (412), or a concurrent conditional write is in flight (409).
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class S3Store:
    def __init__(self, location: Location) -> None:
        boto3 = require("boto3", "state-s3")
        self.location = location
        kwargs: dict[str, Any] = {}
        if "endpoint" in location.options:
            endpoint = location.options["endpoint"]
            kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"https://{endpoint}"
        if "region" in location.options:
            kwargs["region_name"] = location.options["region"]
        self._client = boto3.session.Session(profile_name=location.options.get("profile")).client("s3", **kwargs)
        self._errors = require("botocore.exceptions", "state-s3")

    def describe(self) -> str:
        return f"s3://{self.location.bucket}/{self.location.prefix}".rstrip("/")

    def _fail(self, what: str, key: str, exc: Exception) -> StateError:
        return StateError(f"cannot {what} s3://{self.location.bucket}/{self.location.key(key)}: {exc}")

    def get(self, key: str) -> bytes | None:
        try:
            body = self._client.get_object(Bucket=self.location.bucket, Key=self.location.key(key))["Body"]
            return bytes(body.read())
        except self._errors.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail("read", key, exc) from None
        except self._errors.BotoCoreError as exc:
            raise self._fail("read", key, exc) from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.location.bucket, Key=self.location.key(key), Body=data)
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise self._fail("write", key, exc) from None

    def create(self, key: str, data: bytes) -> bool:
        try:
            self._client.put_object(Bucket=self.location.bucket, Key=self.location.key(key), Body=data, IfNoneMatch="*")
            return True
        except self._errors.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _EXISTS:
                return False
            raise self._fail("create", key, exc) from None
        except self._errors.BotoCoreError as exc:
            raise self._fail("create", key, exc) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise self._fail("delete", key, exc) from None

    def list(self, prefix: str) -> list[str]:
        full = self.location.key(prefix)
        strip = len(self.location.key(""))
        keys: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=full):
                keys.extend(str(obj["Key"])[strip:] for obj in page.get("Contents", []))
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from None
        return keys
