"""URNs, property diffs and dependency order: the pure pieces of the embedded engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gpustack_iac.engine.embedded.diff import (
    apply_ignore_changes,
    diff_inputs,
    normalize_numbers,
    path_matches,
    unwrap,
)
from gpustack_iac.engine.embedded.graph import deletion_order, dependency_order
from gpustack_iac.engine.embedded.monitor import dict_to_struct, struct_to_dict
from gpustack_iac.engine.embedded.urn import make_urn, parse_urn
from gpustack_iac.engine.model import DiffKind
from gpustack_iac.engine.wire import SECRET_SIG, UNKNOWN
from gpustack_iac.engine.wire import SECRET_SIG_KEY as SIG_KEY


def secret(value: object) -> dict:
    return {SIG_KEY: SECRET_SIG, "value": value}


def test_urns_follow_pulumi() -> None:
    stack = make_urn("dev", "proj", "pulumi:pulumi:Stack", "proj-dev")
    assert stack == "urn:pulumi:dev::proj::pulumi:pulumi:Stack::proj-dev"
    comp = make_urn("dev", "proj", "my:index:Svc", "llm", parent=stack)
    assert comp == "urn:pulumi:dev::proj::my:index:Svc::llm"
    child = make_urn("dev", "proj", "my:index:Group", "g", parent=comp)
    assert child == "urn:pulumi:dev::proj::my:index:Svc$my:index:Group::g"
    leaf = make_urn("dev", "proj", "aws:ec2/instance:Instance", "vm::odd", parent=child)
    assert leaf == "urn:pulumi:dev::proj::my:index:Svc$my:index:Group$aws:ec2/instance:Instance::vm::odd"
    parsed = parse_urn(leaf)
    assert (parsed.stack, parsed.project, parsed.type, parsed.name) == (
        "dev", "proj", "aws:ec2/instance:Instance", "vm::odd")
    with pytest.raises(ValueError):
        parse_urn("not-a-urn")


def test_diff_paths_secrets_and_unknowns() -> None:
    old = {"a": 1, "nested": {"x": [1, 2, 3], "gone": True}, "pw": secret("old"), "__provider": "p1"}
    new = {"a": 2, "nested": {"x": [1, 5], "new": "v"}, "pw": secret("new"), "later": UNKNOWN, "__provider": "p2"}
    diffs = {d.path: d for d in diff_inputs(old, new)}
    assert set(diffs) == {"a", "nested.x[1]", "nested.x[2]", "nested.gone", "nested.new", "pw", "later"}
    assert (diffs["a"].kind, diffs["a"].old, diffs["a"].new) == (DiffKind.UPDATE, 1, 2)
    assert diffs["nested.x[2]"].kind is DiffKind.DELETE and diffs["nested.new"].kind is DiffKind.ADD
    assert diffs["pw"].secret and diffs["pw"].old is None and diffs["pw"].new is None
    assert diffs["later"].unknown and diffs["later"].new is None
    # The same secret value is no change.
    assert diff_inputs({"pw": secret("s")}, {"pw": secret("s")}) == []
    assert diff_inputs({"k": {"a-b": 1}}, {"k": {"a-b": 2}})[0].path == 'k["a-b"]'


def test_ignore_changes_keeps_old_values() -> None:
    old = {"content": "old", "meta": {"a": 1, "b": 2}, "list": [1, 2]}
    new = {"content": "new", "meta": {"a": 9, "b": 9}, "list": [7, 8], "extra": 1}
    kept = apply_ignore_changes(old, new, ["content", "meta.a", "list[1]"])
    assert kept == {"content": "old", "meta": {"a": 1, "b": 9}, "list": [7, 2], "extra": 1}
    assert apply_ignore_changes(old, {"content": "x", "__provider": "p"}, ["*"]) == {**old, "__provider": "p"}
    assert path_matches("meta", "meta.a") and path_matches("*", "x") and not path_matches("met", "meta")


def test_struct_round_trip_turns_whole_floats_into_ints() -> None:
    value = {"n": 3, "f": 1.5, "nested": {"l": [1, "s", True]}, "s": secret("v")}
    assert struct_to_dict(dict_to_struct(value)) == value
    assert normalize_numbers({"a": [2.0, 2.5]}) == {"a": [2, 2.5]}
    assert unwrap({"s": secret(secret("v")), "l": [secret(1)]}) == {"s": "v", "l": [1]}
    assert "u" not in struct_to_dict(dict_to_struct({"u": UNKNOWN, "k": 1}))


@dataclass
class Node:
    urn: str
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)


def test_dependency_and_deletion_order() -> None:
    nodes = [
        Node("c", dependencies=["b"]),
        Node("a"),
        Node("b", parent="a"),
        Node("d", property_dependencies={"x": ["c"]}),
        Node("e"),
    ]
    order = [n.urn for n in dependency_order(nodes)]
    assert order.index("a") < order.index("b") < order.index("c") < order.index("d")
    deletion = [n.urn for n in deletion_order(nodes)]
    assert deletion.index("d") < deletion.index("c") < deletion.index("b") < deletion.index("a")
    long_chain = [Node(str(i), dependencies=[str(i + 1)]) for i in range(5000)]
    assert [n.urn for n in dependency_order(long_chain)][0] == "4999"
