"""Wording and value formatting shared by the three plan renderers.

Every renderer goes through these helpers so the terminal, the pull-request comment and the
JSON document never disagree on what a step is called, how a value is shown or what is counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gpustack_iac.engine.model import ApplyResult, DiffKind, Plan, PropertyDiff, Step, StepOp, StepResult
from gpustack_iac.engine.wire import UNKNOWN, is_secret

SECRET_TEXT = "[secret]"
UNKNOWN_TEXT = "(known after apply)"
ARROW = "→"

OP_LABELS: dict[StepOp, str] = {
    StepOp.SAME: "same",
    StepOp.CREATE: "create",
    StepOp.UPDATE: "update",
    StepOp.REPLACE: "replace",
    StepOp.DELETE: "delete",
    StepOp.READ: "read",
    StepOp.REFRESH_DRIFT: "drift",
}

# Past tense for `up` summaries.
OP_DONE: dict[StepOp, str] = {
    StepOp.SAME: "unchanged",
    StepOp.CREATE: "created",
    StepOp.UPDATE: "updated",
    StepOp.REPLACE: "replaced",
    StepOp.DELETE: "deleted",
    StepOp.READ: "read",
    StepOp.REFRESH_DRIFT: "drifted",
}

DIFF_SYMBOLS: dict[DiffKind, str] = {DiffKind.ADD: "+", DiffKind.DELETE: "-", DiffKind.UPDATE: "~"}


def mask_value(value: Any) -> Any:
    """The value with every secret replaced by "[secret]" (for documents that are published)."""
    if is_secret(value):
        return SECRET_TEXT
    if isinstance(value, Mapping):
        return {str(k): mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(v) for v in value]
    return value


def format_value(value: Any) -> str:
    """One-line, JSON-like text for a property value; secrets and unknowns get their fixed words."""
    # Engines mask secret outputs as the string "[secret]" (mask_value): show it as the word.
    if is_secret(value) or (isinstance(value, str) and value == SECRET_TEXT):
        return SECRET_TEXT
    if isinstance(value, str) and value == UNKNOWN:
        return UNKNOWN_TEXT
    if isinstance(value, Mapping):
        inner = ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {format_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        # Pulumi's protobuf transport turns every int into a float; show 3, not 3.0.
        return str(int(value))
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def diff_text(diff: PropertyDiff) -> str:
    """The text after the symbol: `path: old → new`, with secrets and unknowns hidden."""
    if diff.secret:
        body = SECRET_TEXT
    elif diff.kind is DiffKind.ADD:
        body = UNKNOWN_TEXT if diff.unknown else format_value(diff.new)
    elif diff.kind is DiffKind.DELETE:
        body = format_value(diff.old)
    else:
        new = UNKNOWN_TEXT if diff.unknown else format_value(diff.new)
        body = f"{format_value(diff.old)} {ARROW} {new}"
    suffix = " (forces replacement)" if diff.forces_replace else ""
    return f"{diff.path}: {body}{suffix}"


def diff_line(diff: PropertyDiff) -> str:
    return f"{DIFF_SYMBOLS[diff.kind]} {diff_text(diff)}"


def step_tags(step: Step) -> list[str]:
    """Short annotations shown after a step's name, in a fixed order."""
    tags: list[str] = []
    if not step.custom:
        tags.append("component")
    if step.op is StepOp.REPLACE:
        tags.append("delete before replace" if step.delete_before_replace else "create before delete")
        if step.replace_reasons:
            tags.append("forced by: " + ", ".join(step.replace_reasons))
    if step.protect:
        tags.append("protected")
    if step.retain_on_delete and step.op in (StepOp.DELETE, StepOp.REPLACE):
        tags.append("retained on delete")
    return tags


def step_heading(step: Step) -> str:
    """`+- replace  gpustack:local:Host  gpu-1  (create before delete; forced by: image)`."""
    tags = step_tags(step)
    tail = f"  ({'; '.join(tags)})" if tags else ""
    return f"{step.op.symbol} {OP_LABELS[step.op]}  {step.type}  {step.name}{tail}"


def shown_diffs(step: Step) -> list[PropertyDiff]:
    """The diffs a reader sees: none for a component, whose `spec` input repeats its children's
    inputs (the configuration summary says the change once); an added or removed object one line per
    leaf, as terraform shows a nested block. The JSON plan keeps them as the engine gave them."""
    if not step.custom:
        return []
    return [leaf for diff in step.diffs for leaf in _leaves(diff)]


def _leaves(diff: PropertyDiff) -> list[PropertyDiff]:
    if diff.secret or diff.unknown or diff.kind is DiffKind.UPDATE:
        return [diff]
    value = diff.new if diff.kind is DiffKind.ADD else diff.old
    if is_secret(value) or not isinstance(value, (Mapping, list, tuple)) or not value:
        return [diff]
    if not isinstance(value, Mapping) and not any(isinstance(v, (Mapping, list, tuple)) for v in value):
        return [diff]  # a list of scalars reads best on one line: gpus: [0, 1]
    items = sorted(value.items()) if isinstance(value, Mapping) else enumerate(value)
    out: list[PropertyDiff] = []
    for key, child in items:
        path = f"{diff.path}[{key}]" if isinstance(key, int) else f"{diff.path}.{key}"
        leaf = replace(diff, path=path, new=child if diff.kind is DiffKind.ADD else None,
                       old=child if diff.kind is DiffKind.DELETE else None)
        out += _leaves(leaf)
    return out


def visible_steps(steps: Iterable[Step]) -> list[Step]:
    """Steps a reviewer needs to see: everything but `same`."""
    return [s for s in steps if s.op is not StepOp.SAME]


@dataclass(frozen=True)
class PlanCounts:
    create: int
    update: int
    replace: int
    delete: int
    same: int
    read: int
    drift: int

    @classmethod
    def of(cls, plan: Plan) -> PlanCounts:
        return cls(
            create=plan.count(StepOp.CREATE),
            update=plan.count(StepOp.UPDATE),
            replace=plan.count(StepOp.REPLACE),
            delete=plan.count(StepOp.DELETE),
            same=plan.count(StepOp.SAME),
            read=plan.count(StepOp.READ),
            drift=plan.count(StepOp.REFRESH_DRIFT),
        )


def plan_summary_line(plan: Plan) -> str:
    """`Plan: 1 to create, 2 to update, 1 to replace, 1 to delete` (custom resources only)."""
    c = PlanCounts.of(plan)
    if not plan.has_changes:
        return "No changes. The deployed stack matches the configuration."
    line = f"Plan: {c.create} to create, {c.update} to update, {c.replace} to replace, {c.delete} to delete"
    if c.drift:
        line += f", {c.drift} drifted"
    return line


def destructive_steps(plan: Plan) -> list[Step]:
    return [s for s in plan.steps if s.op in (StepOp.DELETE, StepOp.REPLACE)]


def destructive_sentence(plan: Plan) -> str:
    """`This plan replaces 2 resources and deletes 1 resource.` ("" when nothing is destroyed)."""
    c = PlanCounts.of(plan)
    parts: list[str] = []
    if c.replace:
        parts.append(f"replaces {_resources(c.replace)}")
    if c.delete:
        parts.append(f"deletes {_resources(c.delete)}")
    if not parts:
        # Only components are destroyed: still worth a banner, since their children go with them.
        n = len(destructive_steps(plan))
        return f"This plan deletes or replaces {n} component{'s' if n != 1 else ''}." if n else ""
    return "This plan " + " and ".join(parts) + "."


def _resources(n: int) -> str:
    return f"{n} resource{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class ApplyCounts:
    done: dict[StepOp, int]
    failed: int

    @classmethod
    def of(cls, result: ApplyResult) -> ApplyCounts:
        done: dict[StepOp, int] = {}
        failed = 0
        for r in result.results:
            if not r.step.custom:
                continue
            if not r.ok:
                failed += 1
            elif r.step.changes:
                done[r.step.op] = done.get(r.step.op, 0) + 1
        return cls(done=done, failed=failed)


def apply_summary_line(result: ApplyResult) -> str:
    """`Applied: 2 created, 1 updated, 1 deleted` or `Failed: 1 created, 1 failed`."""
    c = ApplyCounts.of(result)
    order = (StepOp.CREATE, StepOp.UPDATE, StepOp.REPLACE, StepOp.DELETE, StepOp.READ, StepOp.REFRESH_DRIFT)
    parts = [f"{c.done[op]} {OP_DONE[op]}" for op in order if c.done.get(op)]
    if c.failed:
        parts.append(f"{c.failed} failed")
    head = "Applied" if result.ok else "Failed"
    return f"{head}: {', '.join(parts) if parts else 'no changes'}"


def result_heading(r: StepResult) -> str:
    """`ok    + create  gpustack:local:Host  web-1  (1.2s)`."""
    mark = "ok  " if r.ok else "FAIL"
    return f"{mark}  {step_heading(r.step)}  ({r.seconds:.1f}s)"


def output_lines(outputs: Mapping[str, Any]) -> list[str]:
    """`key: value` per stack output, sorted, secrets masked."""
    return [f"{k}: {format_value(outputs[k])}" for k in sorted(outputs)]
