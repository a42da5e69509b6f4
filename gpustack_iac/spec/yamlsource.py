"""YAML reading that keeps every node's line and column.

PyYAML composes the node graph (libyaml when available); we build the Python values ourselves so
that duplicate keys are caught and any property path can be mapped back to a node's mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:  # libyaml is an order of magnitude faster; the pure-Python loader gives the same marks.
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# When a property path names a key the YAML spells differently (an accepted alias), try these.
KEY_ALIASES: dict[str, tuple[str, ...]] = {"replica_groups": ("groups", "replicas")}


@dataclass(frozen=True)
class Problem:
    """A problem found while reading YAML, before any model sees the data."""

    line: int
    column: int
    path: str
    message: str


@dataclass
class YamlDocument:
    node: Node
    data: Any
    index: int

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1


class _Builder:
    def __init__(self) -> None:
        self._scalars = SafeConstructor()
        self.problems: list[Problem] = []

    def build(self, node: Node, path: str) -> Any:
        if isinstance(node, ScalarNode):
            if node.tag == _STR_TAG:
                return node.value  # most scalars: skip the generic constructor's bookkeeping
            try:
                return self._scalars.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                self._problem(node, path, f"cannot read this value: {exc.problem}")
                return None
        if isinstance(node, SequenceNode):
            return [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            if any(k.tag == _MERGE_TAG for k, _ in node.value):
                self._scalars.flatten_mapping(node)  # `<<: *anchor` merge keys
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, path)
                if isinstance(key, (list, dict)):
                    self._problem(key_node, path, "expected a plain key")
                    continue
                child = f"{path}.{key}" if path else str(key)
                if key in out:
                    self._problem(key_node, child, f"property {key!r} is given twice")
                    continue
                out[key] = self.build(value_node, child)
            return out
        return None  # pragma: no cover - the composer yields only the three node kinds

    def _problem(self, node: Node, path: str, message: str) -> None:
        self.problems.append(Problem(node.start_mark.line + 1, node.start_mark.column + 1, path, message))


def read_documents(text: str) -> tuple[list[YamlDocument], list[Problem]]:
    """Every document of a (multi-document) YAML text; a syntax error is one located problem."""
    builder = _Builder()
    docs: list[YamlDocument] = []
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_Loader)):
            if node is None:
                continue
            docs.append(YamlDocument(node, builder.build(node, ""), index))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        builder.problems.append(Problem(line, col, "", f"invalid YAML: {exc.problem or exc.context}"))
    return docs, builder.problems


def _children(node: Node) -> Iterator[tuple[Any, Node, Node]]:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                yield key_node.value, key_node, value_node


def find_node(root: Node, loc: Sequence[str | int]) -> tuple[Node, list[str | int], bool]:
    """The deepest node along `loc`, the property path as the user wrote it, and whether all of
    `loc` was found in the YAML (False for a missing property: the node is then its parent).

    Elements that do not name a child (pydantic's union tags such as `openai`) are skipped.
    For a mapping step the key node is returned, so errors point at the property's name.
    """
    node = root
    point = root
    path: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, SequenceNode):
            if 0 <= part < len(node.value):
                node = point = node.value[part]
                path.append(part)
                continue
            return point, path + [p for p in loc[i:] if not is_union_tag(p)], False
        if isinstance(node, MappingNode):
            names = (str(part),) + KEY_ALIASES.get(str(part), ())
            hit = next(((k, v) for name in names for key, k, v in _children(node) if key == name), None)
            if hit is not None:
                point, node = hit
                path.append(hit[0].value)
                continue
        if isinstance(node, ScalarNode):
            break  # the rest names a union member tried on this value (e.g. `int`, `literal['auto']`)
        if is_union_tag(part):
            continue
        return point, path + [p for p in loc[i:] if not is_union_tag(p)], False
    return point, path, True


UNION_TAGS = frozenset({"openai", "tgi", "lets-encrypt", "acm"})


def is_union_tag(part: str | int) -> bool:
    """Whether a pydantic location element names a union member rather than a property."""
    return isinstance(part, str) and (part in UNION_TAGS or not part[:1].islower() or "[" in part)


def find_item(node: Node, item: str) -> Node | None:
    """Inside `node` (a mapping or a list of `KEY=value` strings), the entry for `item`."""
    if isinstance(node, MappingNode):
        for key, key_node, _ in _children(node):
            if key == item:
                return key_node
    if isinstance(node, SequenceNode):
        for child in node.value:
            if isinstance(child, ScalarNode) and child.value.partition("=")[0] == item:
                return child
    return None


def value_node(root: Node, loc: Sequence[str | int]) -> Node | None:
    """The value node at `loc`, or None when the path does not exist in the YAML."""
    node = root
    for part in loc:
        if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        elif isinstance(node, MappingNode):
            names = (str(part),) + KEY_ALIASES.get(str(part), ())
            found = next((v for name in names for key, _, v in _children(node) if key == name), None)
            if found is None:
                return None
            node = found
        else:
            return None
    return node
