"""Turning pydantic's validation errors into located, readable diagnostics."""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from yaml.nodes import Node

from gpustack_iac.errors import Diagnostic
from gpustack_iac.spec.values import did_you_mean
from gpustack_iac.spec.yamlsource import find_item, find_node, is_union_tag, value_node


def format_path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types behind Annotated / Optional / Union."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(tp) for t in _unwrap(arg)]
    return [tp]


def models_at(root: type[BaseModel], loc: Sequence[str | int]) -> list[type[BaseModel]]:
    """The model classes a location can name (several when a union is involved)."""
    current: list[Any] = [root]
    for part in loc:
        nxt: list[Any] = []
        for tp in (t for c in current for t in _unwrap(c)):
            origin = get_origin(tp)
            if isinstance(part, int) and origin in (list, tuple):
                nxt.extend(_unwrap(get_args(tp)[0]))
            elif isinstance(part, str) and origin is dict:
                nxt.extend(_unwrap(get_args(tp)[1]))
            elif isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
                nxt.extend(_unwrap(tp.model_fields[part].annotation))
        if not nxt and is_union_tag(part):
            continue
        current = nxt
    return [t for c in current for t in _unwrap(c) if isinstance(t, type) and issubclass(t, BaseModel)]


def _describe_input(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: Any, root: type[BaseModel], loc: Sequence[str | int]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = sorted({f for m in models_at(root, loc[:-1]) for f in m.model_fields})
        hint = did_you_mean(key, allowed)
        if hint:
            return f"unknown property {key!r}{hint}"
        return f"unknown property {key!r} (expected one of: {', '.join(allowed)})"
    if kind == "missing":
        name = str(loc[-1])
        fields = [m.model_fields[name] for m in models_at(root, loc[:-1]) if name in m.model_fields]
        about = f" ({fields[0].description.rstrip('.')})" if fields and fields[0].description else ""
        return f"missing required property {name!r}{about}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        got = err.get("input")
        hint = did_you_mean(got, [e.strip(" '") for e in expected.replace(" or ", ",").split(",")]) if isinstance(got, str) else ""
        return f"expected {expected}, got {_describe_input(got)}{hint}"
    msg = str(err["msg"])
    if kind == "value_error" and msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if kind in ("config", "env_missing", "unknown_backend"):
        return msg
    if msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be ") :]
        # Users write YAML, not Python: name the YAML shape, not the class.
        msg = re.sub(r"a valid dictionary( or instance of \w+)?", "a mapping of properties", msg)
    elif msg.startswith("Field required"):
        msg = "missing required property"
    return f"{msg}, got {_describe_input(err.get('input'))}"


def from_validation_error(exc: ValidationError, root: type[BaseModel], file: str, node: Node) -> list[Diagnostic]:
    """One diagnostic per pydantic error, placed on the YAML node it is about."""
    out: dict[tuple[int, int, str], list[str]] = {}
    for err in exc.errors(include_url=False):
        loc: list[str | int] = list(err["loc"])
        ctx = err.get("ctx") or {}
        at = ctx.get("at")
        if at:
            loc += [int(p) if p.isdigit() else p for p in str(at).split(".")]
        message = _message(err, root, loc)
        point, path, _ = find_node(node, loc)
        item = ctx.get("item")
        if item:
            container = value_node(node, path)
            found = find_item(container, str(item)) if container is not None else None
            if found is not None:
                point = found
        key = (point.start_mark.line + 1, point.start_mark.column + 1, format_path(path))
        if message not in out.setdefault(key, []):
            out[key].append(message)
    # A union reports once per member; join them so the user reads one line per place.
    found = [Diagnostic(file, line, col, path, "; or ".join(msgs)) for (line, col, path), msgs in out.items()]
    return sorted(found, key=lambda d: (d.line, d.column))
