"""Input-level diffs with Pulumi's conventions: nested property paths, secrets hidden, unknowns marked."""

from __future__ import annotations

import copy
import re
from typing import Any

from gpustack_iac.engine.model import DiffKind, PropertyDiff
from gpustack_iac.engine.wire import UNKNOWN, contains_secret, is_secret, wrap_secret

PROVIDER_KEY = "__provider"

_MISSING = object()


def rewrap_like(like: Any, value: Any) -> Any:
    """`value` with secret wrappers where `like` (the same property before a provider's check or
    read) has them, nested as they were: one secret env value hides only itself, not the whole
    definition. Where the shapes no longer match, the whole subtree is wrapped."""
    if is_secret(like):
        return wrap_secret(rewrap_like(like["value"], value))
    if isinstance(like, dict) and isinstance(value, dict):
        return {k: rewrap_like(like[k], v) if k in like else v for k, v in value.items()}
    if isinstance(like, list) and isinstance(value, list) and len(like) == len(value):
        return [rewrap_like(a, b) for a, b in zip(like, value)]
    return wrap_secret(value) if contains_secret(like) else value


def unwrap(value: Any) -> Any:
    """Every secret wrapper removed, deeply: what a provider that does not accept secrets sees.

    Always a new top-level container for a dict, so a provider may modify what it is given.
    """
    if isinstance(value, dict) and not contains_secret(value):
        return dict(value)
    return _unwrap(value)


def _unwrap(value: Any) -> Any:
    if is_secret(value):
        return _unwrap(value["value"])
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def normalize_numbers(value: Any) -> Any:
    """Protobuf Structs carry every number as a float: give whole numbers back their int form."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def diff_values(old: Any, new: Any, path: str = "") -> list[PropertyDiff]:
    """Leaf-level differences between two property values (dicts and lists descend)."""
    if old is _MISSING and new is _MISSING:
        return []
    if is_secret(old) or is_secret(new):
        if old is not _MISSING and new is not _MISSING and unwrap(old) == unwrap(new):
            return []
        kind = DiffKind.ADD if old is _MISSING else DiffKind.DELETE if new is _MISSING else DiffKind.UPDATE
        return [PropertyDiff(path=path, kind=kind, secret=True)]
    if new is not _MISSING and new == UNKNOWN:
        kind = DiffKind.ADD if old is _MISSING else DiffKind.UPDATE
        return [PropertyDiff(path=path, kind=kind, old=None if old is _MISSING else old, unknown=True)]
    if old is _MISSING:
        return [PropertyDiff(path=path, kind=DiffKind.ADD, new=new)]
    if new is _MISSING:
        return [PropertyDiff(path=path, kind=DiffKind.DELETE, old=old)]
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[PropertyDiff] = []
        for key in sorted(set(old) | set(new)):
            out.extend(diff_values(old.get(key, _MISSING), new.get(key, _MISSING), _join(path, key)))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            o = old[i] if i < len(old) else _MISSING
            n = new[i] if i < len(new) else _MISSING
            out.extend(diff_values(o, n, _join(path, i)))
        return out
    if old == new:
        return []
    return [PropertyDiff(path=path, kind=DiffKind.UPDATE, old=old, new=new)]


def diff_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[PropertyDiff]:
    """The diff of two input bags; the pickled dynamic provider is not a user-visible property."""
    o = {k: v for k, v in old.items() if k != PROVIDER_KEY}
    n = {k: v for k, v in new.items() if k != PROVIDER_KEY}
    if o == n:
        return []  # the common case of a large unchanged stack, without walking every value
    return diff_values(o, n)


def top_key(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def path_matches(pattern: str, path: str) -> bool:
    """Does `path` fall under `pattern` (Pulumi's ignoreChanges/replaceOnChanges paths, `*` = everything)?"""
    if pattern == "*":
        return True
    return path == pattern or path.startswith(pattern + ".") or path.startswith(pattern + "[")


def _split(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for m in re.finditer(r'([^.\[\]"]+)|\[(\d+)\]|\["([^"]*)"\]', path):
        if m.group(2) is not None:
            parts.append(int(m.group(2)))
        elif m.group(3) is not None:
            parts.append(m.group(3))
        else:
            parts.append(m.group(1))
    return parts


def _get(root: Any, parts: list[str | int]) -> Any:
    cur = root
    for p in parts:
        if isinstance(p, int) and isinstance(cur, list) and p < len(cur):
            cur = cur[p]
        elif isinstance(p, str) and isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            return _MISSING
    return cur


def _set(root: dict[str, Any], parts: list[str | int], value: Any) -> None:
    cur: Any = root
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            nxt = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            nxt = cur[p]
        else:
            nxt = _MISSING
        if nxt is _MISSING or not isinstance(nxt, (dict, list)):
            return  # the new value has no such container: nothing to keep
        cur = nxt
    last = parts[-1]
    if value is _MISSING:
        if isinstance(cur, dict) and isinstance(last, str):
            cur.pop(last, None)
    elif isinstance(cur, dict) and isinstance(last, str):
        cur[last] = value
    elif isinstance(cur, list) and isinstance(last, int) and last < len(cur):
        cur[last] = value


def apply_ignore_changes(old: dict[str, Any], new: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """New inputs with every ignored path reset to its old value (what Pulumi does before Check)."""
    if not paths:
        return new
    out = copy.deepcopy(new)
    for path in paths:
        if path == "*":
            keep = {k: v for k, v in out.items() if k == PROVIDER_KEY}
            out = {**copy.deepcopy(old), **keep}
            continue
        parts = _split(path)
        if parts:
            _set(out, parts, copy.deepcopy(_get(old, parts)))
    return out
