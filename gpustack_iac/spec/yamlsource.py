"""YAML reading that keeps every node's line and column, and refuses hostile input.

PyYAML parses (libyaml when available) and our composer builds the node graph, bounding what a
file can make us build: its size, its nesting, and how many values its aliases expand to (a
"billion laughs" file is a few hundred bytes). We build the Python values ourselves so that
duplicate keys are caught, `<<` merge keys follow the YAML merge rules (keys of the mapping itself
override merged ones), plain scalars follow YAML 1.2 (`yes`, `on`, `8080:80` are strings, not
YAML 1.1 booleans and base-60 numbers), and any property path maps back to a node's mark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:  # libyaml parses an order of magnitude faster; the pure-Python parser gives the same marks.
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml.parser import Parser as _Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2's core schema: the only integers and booleans (PyYAML resolves YAML 1.1's wider sets).
_INT_12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_BOOL_12 = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})

# A configuration file is a few kilobytes; these bounds are far above any real one and far below
# what would exhaust the memory or the time of `validate` / `plan`.
MAX_FILE_BYTES = 1024 * 1024
MAX_ALIAS_VALUES = 100_000  # values that aliases and merge keys may add to a file, all documents together
MAX_DEPTH = 64  # nesting of collections, aliases expanded


class Yaml11Bool(str):
    """A plain `yes` / `no` / `on` / `off`: a string in YAML 1.2, a boolean in YAML 1.1.

    Kept as its own type so that a number or boolean property can say why it is refused rather
    than silently reading it as 1 or True.
    """


class LimitError(ComposerError):
    """The file is valid YAML but exceeds a bound on what reading it may build."""


class _Limits(Composer):
    """PyYAML's composer, counting what aliases expand to as the node graph is built."""

    def __init__(self) -> None:
        super().__init__()
        self.produced = 0  # values the documents so far expand to, aliases included
        self.alias_values = 0
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height) of a complete collection
        self.heights: list[int] = []  # per open collection: the greatest height of its children so far

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node: Node = super().compose_node(parent, index)
            values, height = (1, 1) if isinstance(node, ScalarNode) else self.sizes.get(id(node), (-1, 0))
            if values < 0:
                raise LimitError(None, None, "this alias refers to a value that contains it (a recursive structure)", event.start_mark)
            self.alias_values += values
            self.produced += values
            if self.alias_values > MAX_ALIAS_VALUES:
                raise LimitError(
                    None,
                    None,
                    f"aliases in this file expand to more than {MAX_ALIAS_VALUES} values; write the values out "
                    "or use fewer nested aliases",
                    event.start_mark,
                )
            self._child_height(height, event)
            return node
        if isinstance(event, ScalarEvent) and not self.yaml_path_resolvers:
            # The common case, without the generic path's bookkeeping (no path resolvers to descend).
            node = self.compose_scalar_node(event.anchor)
            self.produced += 1
            self._child_height(1, event)
            return node
        if len(self.heights) >= MAX_DEPTH:
            raise LimitError(None, None, f"values are nested deeper than {MAX_DEPTH} levels", event.start_mark)
        before = self.produced
        self.heights.append(0)
        try:
            node = super().compose_node(parent, index)
        finally:
            height = 1 + self.heights.pop()
        self.produced += 1
        self.sizes[id(node)] = (self.produced - before, height)
        self._child_height(height, event)
        return node

    def _child_height(self, height: int, event: Any) -> None:
        if len(self.heights) + height > MAX_DEPTH:
            raise LimitError(None, None, f"values are nested deeper than {MAX_DEPTH} levels", event.start_mark)
        if self.heights and height > self.heights[-1]:
            self.heights[-1] = height


if _Parser.__module__.startswith("yaml.parser"):  # pragma: no cover - PyYAML without libyaml

    class _Loader(Reader, Scanner, _Parser, _Limits, SafeConstructor, Resolver):
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _Parser.__init__(self)
            _Limits.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:

    class _Loader(_Limits, _Parser, SafeConstructor, Resolver):  # type: ignore[no-redef]
        """libyaml's parser under our composer (first in the MRO, so its get_node / compose_* are used)."""

        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
            _Limits.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


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
        self._merged: set[int] = set()

    def build(self, node: Node, path: str) -> Any:
        if isinstance(node, ScalarNode):
            if node.tag == _STR_TAG:
                return node.value  # most scalars: skip the generic constructor's bookkeeping
            if node.tag == _BOOL_TAG and node.value not in _BOOL_12:
                return Yaml11Bool(node.value)
            if node.tag == _INT_TAG and not _INT_12.match(node.value):
                return node.value  # YAML 1.1 only: base 60 (`8080:80`), `0b1`, `1_000`, `017`
            if node.tag == _FLOAT_TAG and ":" in node.value:
                return node.value  # YAML 1.1 base-60 float
            try:
                return self._scalars.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                self._problem(node, path, f"cannot read this value: {exc.problem}")
                return None
        if isinstance(node, SequenceNode):
            return [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            self._merge(node, path)
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

    def _merge(self, node: MappingNode, path: str) -> None:
        """Replace `<<` merge keys by the pairs they bring in, as YAML's merge key type defines it.

        Keys of the mapping itself override merged ones; of several merged mappings, the first
        listed wins. The node is rewritten in place (once), so positions of merged properties point
        at the mapping they came from.
        """
        if id(node) in self._merged or not any(k.tag == _MERGE_TAG for k, _ in node.value):
            return
        self._merged.add(id(node))
        own = [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]
        taken = {self._key(k) for k, _ in own}
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self._problem(source, path, "expected a mapping (or a list of mappings) to merge with <<")
                    continue
                self._merge(source, path)
                for k, v in source.value:
                    key = self._key(k)
                    if key not in taken:
                        taken.add(key)
                        merged.append((k, v))
        node.value = merged + own

    @staticmethod
    def _key(node: Node) -> Any:
        return (node.tag, node.value) if isinstance(node, ScalarNode) else id(node)

    def _problem(self, node: Node, path: str, message: str) -> None:
        self.problems.append(Problem(node.start_mark.line + 1, node.start_mark.column + 1, path, message))


def read_documents(text: str) -> tuple[list[YamlDocument], list[Problem]]:
    """Every document of a (multi-document) YAML text; a syntax error is one located problem."""
    builder = _Builder()
    docs: list[YamlDocument] = []
    if len(text) > MAX_FILE_BYTES:
        line, column = position_of(text, MAX_FILE_BYTES)
        return [], [Problem(line, column, "", too_large_message())]
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        # Found before the parser, which raises a ReaderError with a character offset and no line.
        line, column = position_of(text, bad.start())
        return [], [Problem(line, column, "", control_character_message(bad.group()))]
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_Loader)):
            if node is None:
                continue
            docs.append(YamlDocument(node, builder.build(node, ""), index))
    except yaml.reader.ReaderError as exc:  # any character the scan above did not foresee
        line, col = position_of(text, min(exc.position, len(text)))
        builder.problems.append(Problem(line, col, "", f"invalid YAML: {exc.reason}"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        detail = exc.problem or exc.context
        builder.problems.append(Problem(line, col, "", detail if isinstance(exc, LimitError) else f"invalid YAML: {detail}"))
    return docs, builder.problems


# What YAML 1.1 does not allow in a stream (PyYAML's reader rule): C0 controls but tab, LF and CR,
# DEL, C1 controls but NEL, surrogates and the two non-characters U+FFFE/U+FFFF.
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def control_character_message(char: str) -> str:
    name = "NUL" if char == "\x00" else f"U+{ord(char):04X}"
    return (f"invalid YAML: a {name} control character; a configuration file may hold only printable "
            "text, tabs and line breaks (is this a binary file, or was it damaged?)")


def too_large_message() -> str:
    return f"the file is larger than {MAX_FILE_BYTES // 1024} KiB, the limit for a configuration file; split it into several files"


def position_of(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of character `offset` of `text`."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


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
