"""Dropping resources from state whose host is gone for good (`destroy --force`, `state rm`).

A delete that can never succeed (an SSH host that will not answer again) would otherwise keep the
stack from being destroyed forever. The resource leaves the state, and the state records it as
abandoned, with the reason, so whoever still can may remove it by hand.
"""

from __future__ import annotations

from rich.console import Console

from gpustack_iac.engine.model import ApplyResult
from gpustack_iac.engine.state import Abandoned, Checkpoint, ResourceState, StateStore
from gpustack_iac.errors import GpustackError


def abandon_failed(store: StateStore, result: ApplyResult) -> list[Abandoned]:
    """Abandon each resource whose delete failed in `result`; the others are deleted by the next destroy."""
    failed = {r.step.urn: r.error or "its delete failed" for r in result.results if not r.ok}
    with store.lock("destroy --force"):
        checkpoint = store.load()
        return [store.abandon(res, f"delete failed: {failed[res.urn]}") for res in checkpoint.resources
                if res.urn in failed and res.custom]


def abandon_named(store: StateStore, name: str) -> list[Abandoned]:
    """`state rm`: abandon the resource called `name` (URN or last URN part); refused while others depend on it."""
    with store.lock("state rm"):
        checkpoint = store.load()
        matches = [r for r in checkpoint.resources if r.urn == name or r.urn.rsplit("::", 1)[-1] == name]
        if not matches:
            raise GpustackError(f"no resource {name!r} in state; see `gpustack-iac state list`")
        for res in matches:
            _refuse_dependents(checkpoint, res)
        return [store.abandon(res, "removed by `state rm`") for res in matches]


def _refuse_dependents(checkpoint: Checkpoint, res: ResourceState) -> None:
    users = [r.urn.rsplit("::", 1)[-1] for r in checkpoint.resources
             if r.urn != res.urn and (res.urn in r.dependencies or r.parent == res.urn)]
    if users:
        raise GpustackError(f"{res.urn.rsplit('::', 1)[-1]} is still used by {', '.join(users)}: remove those first "
                            "(`gpustack-iac state rm NAME`), or run `gpustack-iac destroy --force`")


def print_abandoned(entries: list[Abandoned], console: Console) -> None:
    if not entries:
        return
    console.print("Abandoned (left out of the state; delete them by hand if they still exist):")
    for entry in entries:
        console.print(f"  - {entry.type} {entry.urn.rsplit('::', 1)[-1]} (id {entry.id or '-'}): {entry.reason}",
                      highlight=False, soft_wrap=True)
