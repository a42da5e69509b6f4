"""Dependency order of resources in state: what must go before what."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class _Node(Protocol):
    @property
    def urn(self) -> str: ...

    @property
    def parent(self) -> str: ...

    @property
    def dependencies(self) -> list[str]: ...

    @property
    def property_dependencies(self) -> dict[str, list[str]]: ...


T = TypeVar("T", bound=_Node)


def dependency_order(nodes: Sequence[T]) -> list[T]:
    """Dependencies (and parents) before dependents; ties keep the given order."""
    by_urn = {n.urn: n for n in nodes}
    done: set[str] = set()
    out: list[T] = []
    for root in nodes:
        if root.urn in done:
            continue
        # Iterative DFS so a long dependency chain cannot hit the recursion limit.
        stack: list[tuple[T, bool]] = [(root, False)]
        on_path: set[str] = set()
        while stack:
            node, expanded = stack.pop()
            if node.urn in done:
                continue
            if expanded:
                on_path.discard(node.urn)
                done.add(node.urn)
                out.append(node)
                continue
            if node.urn in on_path:
                continue  # a cycle cannot come from Pulumi; ignore the back edge rather than loop
            on_path.add(node.urn)
            stack.append((node, True))
            deps = [node.parent, *node.dependencies]
            for urns in node.property_dependencies.values():
                deps.extend(urns)
            for dep in reversed(deps):
                target = by_urn.get(dep)
                if target is not None and dep not in done and dep not in on_path:
                    stack.append((target, False))
    return out


def deletion_order(nodes: Sequence[T]) -> list[T]:
    """Dependents before what they depend on: the reverse of `dependency_order`."""
    return list(reversed(dependency_order(nodes)))
