"""Whether a saved plan still matches what the `pulumi` engine would do now: compares the changing
steps of the saved plan with a fresh preview and names the first difference in PlanStaleError.
"""

from __future__ import annotations

from gpustack_iac.engine.model import Plan
from gpustack_iac.engine.pulumi_events import urn_name
from gpustack_iac.errors import PlanStaleError


def step_signature(plan: Plan) -> list[tuple[str, str, tuple[str, ...]]]:
    """What must not change between a saved plan and `up`: each changing step, its op and diff paths."""
    return [
        (s.urn, s.op.value, tuple(sorted(d.path for d in s.diffs)))
        for s in plan.steps
        if s.changes
    ]


def check_plan_current(saved: Plan, fresh: Plan) -> None:
    """PlanStaleError naming the first difference when `fresh` would do something `saved` did not show."""
    old, new = step_signature(saved), step_signature(fresh)
    if old == new:
        return
    old_by_urn = {urn: (op, paths) for urn, op, paths in old}
    new_by_urn = {urn: (op, paths) for urn, op, paths in new}
    for urn in list(new_by_urn) + list(old_by_urn):
        if old_by_urn.get(urn) != new_by_urn.get(urn):
            was = old_by_urn.get(urn, ("no change", ()))[0]
            now = new_by_urn.get(urn, ("no change", ()))[0]
            raise PlanStaleError(
                f"the saved plan is out of date: {urn_name(urn)} was planned as {was}, now {now}; "
                "run `gpustack-iac plan` again"
            )
    raise PlanStaleError("the saved plan is out of date (steps reordered); run `gpustack-iac plan` again")
