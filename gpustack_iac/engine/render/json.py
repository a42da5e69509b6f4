"""Plan and `up` result as JSON documents with a `format_version` and a fixed key order.

`plan_to_dict` carries every field of the plan, so the same document is both the machine-readable
rendering (`plan --format json`) and the saved plan (`plan -o FILE`, read back by planfile.py).
Secret values never reach the document: secret diffs carry null, secret outputs "[secret]".
"""

from __future__ import annotations

import json
from typing import Any

from gpustack_iac.engine.model import PLAN_FORMAT_VERSION, ApplyResult, Plan, PropertyDiff, Step, StepResult
from gpustack_iac.engine.render import common

PLAN_KIND = "gpustack-iac/plan"
APPLY_KIND = "gpustack-iac/apply"


def diff_to_dict(diff: PropertyDiff) -> dict[str, Any]:
    return {
        "path": diff.path,
        "kind": diff.kind.value,
        "old": None if diff.secret else common.mask_value(diff.old),
        "new": None if diff.secret else common.mask_value(diff.new),
        "forces_replace": diff.forces_replace,
        "secret": diff.secret,
        "unknown": diff.unknown,
    }


def step_to_dict(step: Step) -> dict[str, Any]:
    return {
        "urn": step.urn,
        "type": step.type,
        "name": step.name,
        "op": step.op.value,
        "custom": step.custom,
        "parent": step.parent,
        "diffs": [diff_to_dict(d) for d in step.diffs],
        "replace_reasons": list(step.replace_reasons),
        "delete_before_replace": step.delete_before_replace,
        "protect": step.protect,
        "retain_on_delete": step.retain_on_delete,
        "detail": step.detail,
    }


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    counts = common.PlanCounts.of(plan)
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "kind": PLAN_KIND,
        "stack": plan.stack,
        "project": plan.project,
        "engine": plan.engine,
        "config_fingerprint": plan.config_fingerprint,
        "state_serial": plan.state_serial,
        "config_paths": list(plan.config_paths),
        "config_recursive": plan.config_recursive,
        # Derived, for CI scripts; ignored when the plan is loaded back.
        "summary": {
            "create": counts.create,
            "update": counts.update,
            "replace": counts.replace,
            "delete": counts.delete,
            "same": counts.same,
            "read": counts.read,
            "drift": counts.drift,
            "has_changes": plan.has_changes,
            "destructive": plan.destructive,
            "text": common.plan_summary_line(plan),
        },
        "config_changes": [
            {"kind": c.kind, "name": c.name, "summary": c.summary, "disruptive": c.disruptive}
            for c in plan.config_changes
        ],
        "steps": [step_to_dict(s) for s in plan.steps],
        "warnings": list(plan.warnings),
        "outputs": common.mask_value(plan.outputs),
        # Only when estimated: plan files from before the cost existed stay byte-identical.
        **({"cost": plan.cost} if plan.cost is not None else {}),
        # Only SSH fleets have hosts to show; absent otherwise, so existing plans read the same.
        **({"hosts": list(plan.hosts)} if plan.hosts else {}),
    }


def result_to_dict(result: StepResult) -> dict[str, Any]:
    return {"step": step_to_dict(result.step), "ok": result.ok, "error": result.error, "seconds": result.seconds}


def apply_to_dict(result: ApplyResult) -> dict[str, Any]:
    counts = common.ApplyCounts.of(result)
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "kind": APPLY_KIND,
        "stack": result.stack,
        "ok": result.ok,
        "summary": {
            **{op.value: n for op, n in sorted(counts.done.items(), key=lambda kv: kv[0].value)},
            "failed": counts.failed,
            "text": common.apply_summary_line(result),
        },
        "results": [result_to_dict(r) for r in result.results],
        "outputs": common.mask_value(result.outputs),
    }


def _dumps(doc: dict[str, Any]) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and other tools would reject the file.
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_json(plan: Plan) -> str:
    """`{"format_version": 1, "kind": "gpustack-iac/plan", ...}` with a fixed key order."""
    return _dumps(plan_to_dict(plan))


def render_apply_json(result: ApplyResult) -> str:
    """`{"format_version": 1, "kind": "gpustack-iac/apply", ...}` with a fixed key order."""
    return _dumps(apply_to_dict(result))
