"""Backends are objects: every name the language accepts has one, capabilities are what callers ask,
and comparisons of backend names stay inside gpustack_iac/backends/ (a few at most elsewhere)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gpustack_iac import backends
from gpustack_iac.backends import CAPABILITIES, REGISTRY, CloudVmBackend, WithPulumiPlugin, get
from gpustack_iac.errors import GpustackError
from gpustack_iac.spec.values import BACKENDS

PACKAGE = Path(backends.__file__).resolve().parents[1]
NAMES = set(BACKENDS)
# Where backend names are the subject itself: the registry, the language that validates them, and
# the property x backend support matrix (support.py, a table keyed by backend, generated into the docs).
OWNERS = ("backends", "spec", "support.py")
ALLOWED_OUTSIDE = 3  # "a handful at most": raise only with a reason in the commit message


def _name_literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and node.value in NAMES:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in NAMES]
    return []


def _name_comparisons() -> list[str]:
    """`x == "aws"`, `b in ("local", "ssh")`, `X_BACKENDS = ("aws", "gcp")` outside the owners."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            hits: list[str] = []
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    hits += _name_literals(side)
            elif isinstance(node, (ast.Tuple, ast.Set)) and len(_name_literals(node)) >= 2:
                hits = _name_literals(node)
            if hits:
                found.append(f"{rel}:{getattr(node, 'lineno', 0)}: {', '.join(hits)}")
    return found


def test_backend_name_comparisons_live_in_the_registry() -> None:
    found = _name_comparisons()
    assert len(found) <= ALLOWED_OUTSIDE, "ask a Backend capability instead of comparing names:\n" + "\n".join(found)


def test_every_backend_name_the_language_accepts_has_an_object() -> None:
    assert set(REGISTRY) == NAMES
    implemented = {b for b, obj in REGISTRY.items() if obj.implemented}
    assert implemented == {"local", "ssh", "aws", "gcp", "azure", "kubernetes"}
    assert backends.IMPLEMENTED_BACKENDS == ("local", "ssh", "aws", "gcp", "azure", "kubernetes")
    assert not get("vastai").implemented and not get("aws,gcp").implemented  # a typo or a combination deploys nothing


@pytest.mark.parametrize("name", sorted(NAMES))
def test_capabilities_are_consistent(name: str) -> None:
    b = get(name)
    caps = b.capabilities()
    assert set(caps) == set(CAPABILITIES)
    if not b.implemented:
        assert not any(v for k, v in caps.items()), f"{name} is not implemented but claims {caps}"
        return
    assert not (b.free and b.priced)
    assert b.needs_pulumi_cli == isinstance(b, WithPulumiPlugin)
    if isinstance(b, CloudVmBackend):
        itype, price = b.gateway_type
        assert itype and price > 0 and b.supports_spot and b.priced
    assert b.runs_processes or b.supports_image


def test_spot_and_sizing_capabilities() -> None:
    assert [b for b in backends.IMPLEMENTED_BACKENDS if get(b).supports_spot] == ["aws", "gcp", "azure"]
    assert get("aws").sizes_node_groups and not get("local").sizes_node_groups
    assert get("gcp").region_of_offer("us-central1-a") == "us-central1"  # type: ignore[attr-defined]
    assert not get("kubernetes").runs_processes  # a Kubernetes replica is a container


def test_a_backend_without_plugin_resources_says_so() -> None:
    with pytest.raises(GpustackError, match="no provider-plugin resources"):
        backends.plugin("local")
