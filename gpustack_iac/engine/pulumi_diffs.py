"""Property-level diffs of one Pulumi step: reads the old and new inputs/outputs and the detailed
diff carried by the CLI's StepEventMetadata and turns them into PropertyDiff entries, masking
secrets and marking unknown (computed) values; also the drift a refresh found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gpustack_iac.engine.model import DiffKind, PropertyDiff
from gpustack_iac.engine.render.common import SECRET_TEXT
from gpustack_iac.engine.wire import UNKNOWN, is_secret

_DIFF_KINDS: dict[str, tuple[DiffKind, bool]] = {
    "add": (DiffKind.ADD, False),
    "add-replace": (DiffKind.ADD, True),
    "delete": (DiffKind.DELETE, False),
    "delete-replace": (DiffKind.DELETE, True),
    "update": (DiffKind.UPDATE, False),
    "update-replace": (DiffKind.UPDATE, True),
}

_PATH_TOKEN = re.compile(r'\.?([^.\[\]"]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]')


def parse_property_path(path: str) -> list[str | int]:
    """`a.b[0]["c.d"]` → ["a", "b", 0, "c.d"] (Pulumi's property path syntax)."""
    segments: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _PATH_TOKEN.match(path, pos)
        if m is None or m.end() == pos:
            # Not a path we understand: treat the rest as one key rather than guessing.
            segments.append(path[pos:])
            break
        name, index, quoted = m.groups()
        if name is not None:
            segments.append(name)
        elif index is not None:
            segments.append(int(index))
        else:
            segments.append(re.sub(r"\\(.)", r"\1", quoted))
        pos = m.end()
    return segments


_MISSING = object()


def lookup(tree: Any, path: str) -> Any:
    """The value at a property path, or _MISSING; secrets met on the way stay wrapped."""
    value = tree
    for seg in parse_property_path(path):
        if is_secret(value):
            return value
        if isinstance(seg, int) and isinstance(value, list) and 0 <= seg < len(value):
            value = value[seg]
        elif isinstance(seg, str) and isinstance(value, Mapping) and seg in value:
            value = value[seg]
        else:
            return _MISSING
    return value


def _is_secret(value: Any) -> bool:
    return is_secret(value) or (isinstance(value, str) and value == SECRET_TEXT)


def _contains_secret(value: Any) -> bool:
    if _is_secret(value):
        return True
    if isinstance(value, Mapping):
        return any(_contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(v) for v in value)
    return False


def _is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value == UNKNOWN


def _visible_keys(props: Mapping[str, Any] | None) -> list[str]:
    # `__provider` (the pickled dynamic provider) and other `__` keys are engine plumbing.
    return [k for k in (props or {}) if not k.startswith("__")]


def _make_diff(path: str, kind: DiffKind, old: Any, new: Any, forces: bool) -> PropertyDiff:
    old = None if old is _MISSING else old
    new = None if new is _MISSING else new
    if _contains_secret(old) or _contains_secret(new):
        return PropertyDiff(path, kind, forces_replace=forces, secret=True, unknown=_is_unknown(new))
    if _is_unknown(new):
        return PropertyDiff(path, kind, old=old, forces_replace=forces, unknown=True)
    return PropertyDiff(path, kind, old=old, new=new, forces_replace=forces)


def _top_key(path: str) -> str:
    segments = parse_property_path(path)
    return str(segments[0]) if segments else path


def property_diffs(meta: Any) -> list[PropertyDiff]:
    """Property-level diffs of one step's metadata (StepEventMetadata)."""
    old_inputs = meta.old.inputs if meta.old and meta.old.inputs else {}
    old_outputs = meta.old.outputs if meta.old and meta.old.outputs else {}
    new_inputs = meta.new.inputs if meta.new and meta.new.inputs else {}
    replace_keys = set(meta.keys or [])
    op = step_op_name(meta)
    diffs: list[PropertyDiff] = []
    if meta.detailed_diff:
        for path, pdiff in meta.detailed_diff.items():
            kind, forces = _DIFF_KINDS[pdiff.diff_kind.value]
            # input_diff=False means the old value is the provider's recorded state, not the old input.
            old = lookup(old_inputs if pdiff.input_diff else old_outputs, path)
            if old is _MISSING:
                old = lookup(old_inputs, path)
            new = lookup(new_inputs, path)
            diffs.append(_make_diff(path, kind, old, new, forces or _top_key(path) in replace_keys))
        return diffs
    if op in ("create", "create-replacement", "import") and not meta.old:
        return [_make_diff(k, DiffKind.ADD, _MISSING, new_inputs[k], False) for k in _visible_keys(new_inputs)]
    # No detailed diff (older providers): compare the top-level keys the engine says changed.
    for key in meta.diffs or []:
        if key.startswith("__"):
            continue
        old, new = old_inputs.get(key, _MISSING), new_inputs.get(key, _MISSING)
        kind = DiffKind.ADD if old is _MISSING else DiffKind.DELETE if new is _MISSING else DiffKind.UPDATE
        diffs.append(_make_diff(key, kind, old, new, key in replace_keys))
    return diffs


def drift_diffs(meta: Any) -> list[PropertyDiff]:
    """What a refresh found different between the recorded and the real outputs."""
    old = (meta.old.outputs or {}) if meta.old else {}
    new = (meta.new.outputs or {}) if meta.new else {}
    diffs: list[PropertyDiff] = []
    for key in sorted(set(_visible_keys(old)) | set(_visible_keys(new))):
        o, n = old.get(key, _MISSING), new.get(key, _MISSING)
        if o == n:
            continue
        kind = DiffKind.ADD if o is _MISSING else DiffKind.DELETE if n is _MISSING else DiffKind.UPDATE
        diffs.append(_make_diff(key, kind, o, n, False))
    return diffs


def step_op_name(meta: Any) -> str:
    """The step kind of a StepEventMetadata as text (`create-replacement`, ...), enum or not."""
    return str(meta.op.value if hasattr(meta.op, "value") else meta.op)
