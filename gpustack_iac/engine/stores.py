"""Open a stack's state from its URL: a directory (file state) or a remote store; list the stacks there."""

from __future__ import annotations

from gpustack_iac.engine.remote.objects import REMOTE_SCHEMES
from gpustack_iac.engine.state import StateStore


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def open_store(url: str, project: str, stack: str, passphrase: str | None = None) -> StateStore:
    """The stack's store: RemoteStateStore for s3://, gs://, azblob://, postgres://; else file state."""
    if _scheme(url) in REMOTE_SCHEMES:
        from gpustack_iac.engine.remote.store import RemoteStateStore  # the SDKs load only for remote state

        return RemoteStateStore(url, project, stack, passphrase)
    return StateStore.from_url(url, project, stack, passphrase)


def list_stacks(url: str) -> list[tuple[str, str]]:
    """(project, stack) of every checkpoint at a remote state location."""
    from gpustack_iac.engine.remote.open import open_object_store
    from gpustack_iac.engine.remote.store import list_stacks as remote_stacks

    return remote_stacks(open_object_store(url))
