"""Saved plans: `plan -o FILE` writes one, `up FILE` reads it back and applies exactly that.

The file is the JSON rendering of the plan (render/json.py), so a reviewer can read what will be
applied. Loading checks `kind` and `format_version` and every field's type, so a truncated or
hand-edited file is refused with one clear message instead of applying something unexpected.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gpustack_iac.engine.model import (
    PLAN_FORMAT_VERSION,
    ConfigChange,
    DiffKind,
    Plan,
    PropertyDiff,
    Step,
    StepOp,
)
from gpustack_iac.engine.render.json import PLAN_KIND, render_json
from gpustack_iac.errors import PlanFileError


def save_plan(plan: Plan, path: Path | str) -> None:
    """Write `plan` to `path` atomically (a reader never sees half a file)."""
    target = Path(path)
    try:
        text = render_json(plan)
    except (TypeError, ValueError) as exc:
        raise PlanFileError(f"{target}: the plan holds a value that is not JSON: {exc}") from exc
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PlanFileError(f"{target}: cannot write the plan: {exc.strerror or exc}") from exc


def load_plan(path: Path | str) -> Plan:
    """Read a plan written by `save_plan`; PlanFileError if it is missing, corrupt or too new."""
    source = Path(path)
    try:
        raw = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFileError(f"{source}: cannot read the plan: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{source}:{exc.lineno}:{exc.colno}: not a plan file (invalid JSON: {exc.msg})") from exc
    try:
        return plan_from_dict(doc)
    except _Invalid as exc:
        raise PlanFileError(f"{source}: not a valid plan file: {exc}") from exc


class _Invalid(Exception):
    """A field of the document has the wrong shape; the message names its path."""


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict):
        raise _Invalid(f"{where or 'document'}: expected an object")
    if key not in obj:
        raise _Invalid(f"{_at(where, key)}: missing")
    value = obj[key]
    # bool is an int subclass: an int field must not accept true/false.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _Invalid(f"{_at(where, key)}: expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise _Invalid(f"{_at(where, key)}: expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _str_list(obj: dict[str, Any], key: str, where: str) -> list[str]:
    items = _get(obj, key, list, where)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _Invalid(f"{_at(where, key)}[{i}]: expected a string")
    return list(items)


def _optional(doc: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """A field added after version 1 first shipped: absent in older files, never wrong if present."""
    return _get(doc, key, kind, "") if key in doc else default


def _enum(enum: type[StepOp] | type[DiffKind], value: str, where: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise _Invalid(f"{where}: {value!r} is not one of {allowed}") from None


def _diff_from_dict(d: Any, where: str) -> PropertyDiff:
    if not isinstance(d, dict) or "old" not in d or "new" not in d:
        raise _Invalid(f"{where}: expected an object with old and new")
    return PropertyDiff(
        path=_get(d, "path", str, where),
        kind=_enum(DiffKind, _get(d, "kind", str, where), f"{where}.kind"),
        old=d["old"],
        new=d["new"],
        forces_replace=_get(d, "forces_replace", bool, where),
        secret=_get(d, "secret", bool, where),
        unknown=_get(d, "unknown", bool, where),
    )


def _step_from_dict(s: Any, where: str) -> Step:
    diffs = _get(s, "diffs", list, where)
    return Step(
        urn=_get(s, "urn", str, where),
        type=_get(s, "type", str, where),
        name=_get(s, "name", str, where),
        op=_enum(StepOp, _get(s, "op", str, where), f"{where}.op"),
        custom=_get(s, "custom", bool, where),
        parent=_get(s, "parent", (str, type(None)), where),
        diffs=[_diff_from_dict(d, f"{where}.diffs[{i}]") for i, d in enumerate(diffs)],
        replace_reasons=_str_list(s, "replace_reasons", where),
        delete_before_replace=_get(s, "delete_before_replace", bool, where),
        protect=_get(s, "protect", bool, where),
        retain_on_delete=_get(s, "retain_on_delete", bool, where),
        detail=_get(s, "detail", str, where),
    )


def _change_from_dict(c: Any, where: str) -> ConfigChange:
    return ConfigChange(
        kind=_get(c, "kind", str, where),
        name=_get(c, "name", str, where),
        summary=_get(c, "summary", str, where),
        disruptive=_get(c, "disruptive", bool, where),
    )


def plan_from_dict(doc: Any) -> Plan:
    """The inverse of render.json.plan_to_dict; raises _Invalid naming the bad field."""
    kind = _get(doc, "kind", str, "")
    if kind != PLAN_KIND:
        raise _Invalid(f"kind: expected {PLAN_KIND!r}, got {kind!r}")
    version = _get(doc, "format_version", int, "")
    if version != PLAN_FORMAT_VERSION:
        raise _Invalid(
            f"format_version {version} is not supported (this gpustack-iac reads version {PLAN_FORMAT_VERSION}); "
            "make the plan again with this version"
        )
    steps = _get(doc, "steps", list, "")
    changes = _get(doc, "config_changes", list, "")
    return Plan(
        stack=_get(doc, "stack", str, ""),
        steps=[_step_from_dict(s, f"steps[{i}]") for i, s in enumerate(steps)],
        config_changes=[_change_from_dict(c, f"config_changes[{i}]") for i, c in enumerate(changes)],
        warnings=_str_list(doc, "warnings", ""),
        outputs=dict(_get(doc, "outputs", dict, "")),
        config_fingerprint=_get(doc, "config_fingerprint", str, ""),
        state_serial=_get(doc, "state_serial", int, ""),
        engine=_get(doc, "engine", str, ""),
        format_version=version,
        project=_optional(doc, "project", str, ""),
        config_paths=_str_list(doc, "config_paths", "") if "config_paths" in doc else [],
        config_recursive=_optional(doc, "config_recursive", bool, False),
        cost=_get(doc, "cost", (dict, type(None)), "") if "cost" in doc else None,
        hosts=_str_list(doc, "hosts", "") if "hosts" in doc else [],
    )
