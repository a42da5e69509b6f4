"""The few object-store operations remote state needs, and the one place a state URL picks a store.

Every store holds byte objects under keys relative to the URL's prefix (`.pulumi/stacks/p/s.json`).
`create` is the store's atomic primitive: it writes only when no object has the key, and says
whether it did (S3 and Azure: `If-None-Match: *`; GCS: `ifGenerationMatch=0`; PostgreSQL: the
primary key). The lock is built on it and nothing else.

SDKs are imported lazily, by the store that needs them (open.py picks it); a missing one is one line
naming the extra.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from gpustack_iac.errors import StateError

REMOTE_SCHEMES = ("s3", "gs", "azblob", "postgres", "postgresql")


class ObjectStore(Protocol):
    """Byte objects by key; `create` is atomic (write only if absent)."""

    def describe(self) -> str: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def create(self, key: str, data: bytes) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> list[str]: ...


@dataclass(frozen=True)
class Location:
    """A parsed remote state URL: scheme, bucket (container, database URL), key prefix, query options."""

    url: str
    scheme: str
    bucket: str
    prefix: str
    options: dict[str, str]

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative


def parse_location(url: str) -> Location:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme in ("postgres", "postgresql"):
        return Location(url, "postgres", url, "", options)
    if not parts.netloc:
        raise StateError(f"state location {url!r} names no {'container' if scheme == 'azblob' else 'bucket'}")
    return Location(url, scheme, parts.netloc, parts.path.strip("/"), options)


def require(module: str, extra: str) -> ModuleType:
    """Import an SDK module, or fail in one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StateError(
            f"this state location needs {module.split('.')[0]}: pip install 'gpustack-iac[{extra}]'"
        ) from None
