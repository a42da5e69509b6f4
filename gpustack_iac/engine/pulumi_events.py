"""Translation of the `pulumi` CLI's engine events into the plan model (engine/model.py): maps
Pulumi's step kinds onto our StepOps, builds one Step per resource (merging the phases of a
replacement and a preceding refresh), and collects step results, warnings, errors and outputs,
so renderers, saved plans and the CLI never know which engine ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gpustack_iac.engine.base import StartCallback, StepCallback
from gpustack_iac.engine.model import ApplyResult, Plan, PropertyDiff, Step, StepOp, StepResult
from gpustack_iac.engine.pulumi_cli import ENGINE_NAME, clean_message
from gpustack_iac.engine.pulumi_diffs import drift_diffs, property_diffs, step_op_name
from gpustack_iac.engine.render.common import mask_value
from gpustack_iac.errors import EngineError

ROOT_STACK_TYPE = "pulumi:pulumi:Stack"

# Every step kind of the Pulumi engine (apitype OpType) onto the few our plans show. The three
# phases of a replacement collapse into one REPLACE step, as `pulumi preview` displays them.
_OP_MAP: dict[str, StepOp] = {
    "same": StepOp.SAME,
    "create": StepOp.CREATE,
    "update": StepOp.UPDATE,
    "delete": StepOp.DELETE,
    "replace": StepOp.REPLACE,
    "create-replacement": StepOp.REPLACE,
    "delete-replaced": StepOp.REPLACE,
    "read": StepOp.READ,
    "read-replacement": StepOp.READ,
    "refresh": StepOp.READ,
    "discard": StepOp.DELETE,  # a read resource no longer in the program: dropped, not destroyed
    "discard-replaced": StepOp.REPLACE,
    "remove-pending-replace": StepOp.SAME,
    "import": StepOp.CREATE,
    "import-replacement": StepOp.REPLACE,
}
_REPLACE_PHASES = {"replace", "create-replacement", "delete-replaced", "discard-replaced", "import-replacement"}
# The op whose completion means "this resource's step is done" during `up`.
_FINAL_OPS = {"same", "create", "update", "delete", "replace", "read", "refresh", "discard", "import"}


def map_op(op: str) -> StepOp:
    """Pulumi's op name (`create-replacement`, `refresh`, ...) → our StepOp."""
    try:
        return _OP_MAP[op]
    except KeyError:
        raise EngineError(f"the pulumi CLI reported an unknown step kind {op!r}") from None


def urn_name(urn: str) -> str:
    """The resource name: everything after the last `::` of the URN."""
    return urn.rsplit("::", 1)[-1]


def step_from_metadata(meta: Any) -> Step:
    """One model Step from a StepEventMetadata (without merging replacement phases)."""
    op_name = step_op_name(meta)
    state = meta.new or meta.old
    parent = state.parent if state and state.parent else None
    custom = True if state is None or state.custom is None else bool(state.custom)
    op = map_op(op_name)
    detail = ""
    diffs: list[PropertyDiff]
    if op_name == "refresh":
        vanished = meta.new is None or not meta.new.id
        diffs = [] if vanished else drift_diffs(meta)
        if vanished:
            op, detail = StepOp.REFRESH_DRIFT, "the resource no longer exists"
        elif diffs:
            op = StepOp.REFRESH_DRIFT
    else:
        diffs = property_diffs(meta) if op not in (StepOp.DELETE, StepOp.SAME, StepOp.READ) else []
    if op_name == "import":
        detail = "imported: adopts an existing resource"
    elif op_name == "discard":
        detail = "read resource dropped from state; the real resource is left alone"
    elif op_name == "remove-pending-replace":
        detail = "a pending replacement is removed from state"
    reasons = list(meta.keys or []) if op is StepOp.REPLACE else []
    return Step(
        urn=meta.urn,
        type=meta.type or (state.type if state else ""),
        name=urn_name(meta.urn),
        op=op,
        custom=custom,
        parent=parent,
        diffs=diffs,
        replace_reasons=reasons,
        delete_before_replace=False,
        protect=bool(state.protect) if state and state.protect is not None else False,
        retain_on_delete=bool(state.retain_on_delete) if state and state.retain_on_delete is not None else False,
        detail=detail,
    )


@dataclass
class EventTranslator:
    """Feeds on the CLI's engine events (`on_event`) and builds steps, results and warnings.

    The SDK calls it from its log-watcher thread, one event at a time, so the callbacks run there.
    """

    on_start: StartCallback | None = None
    on_step: StepCallback | None = None
    steps: dict[str, Step] = field(default_factory=dict)
    results: dict[str, StepResult] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)
    _phases: dict[str, list[str]] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _errors_by_urn: dict[str, list[str]] = field(default_factory=dict)
    _announced: set[str] = field(default_factory=set)

    def __call__(self, event: Any) -> None:
        self.handle(event)

    def handle(self, event: Any) -> None:
        if event.resource_pre_event is not None:
            self._pre(event.resource_pre_event.metadata)
        elif event.res_outputs_event is not None:
            self._done(event.res_outputs_event.metadata)
        elif event.res_op_failed_event is not None:
            self._failed(event.res_op_failed_event.metadata)
        elif event.diagnostic_event is not None:
            self._diagnostic(event.diagnostic_event)
        elif event.summary_event is not None:
            self.summary = {str(getattr(k, "value", k)): int(v) for k, v in event.summary_event.resource_changes.items()}

    def _merge(self, meta: Any) -> Step:
        """Record one phase of a resource's step and return the step it belongs to.

        The phases of a replacement merge into one REPLACE step. A refresh phase (preview or up
        with refresh) comes first and gives way to the step that follows it for the same URN,
        keeping a note when the refresh found drift.
        """
        op_name = step_op_name(meta)
        step = step_from_metadata(meta)
        earlier = list(self._phases.get(meta.urn, []))
        self._phases.setdefault(meta.urn, []).append(op_name)
        current = self.steps.get(meta.urn)
        if current is None:
            merged = step
        elif earlier and all(p == "refresh" for p in earlier) and op_name != "refresh":
            merged = step
            if current.op is StepOp.REFRESH_DRIFT and not merged.detail:
                merged.detail = "refresh: " + (current.detail or "the resource drifted from the state")
        elif op_name in _REPLACE_PHASES:
            merged = current
            merged.diffs = merged.diffs or step.diffs
            merged.replace_reasons = merged.replace_reasons or step.replace_reasons
        else:
            merged = current
        if merged.op is StepOp.REPLACE:
            phases = self._phases[meta.urn]
            # Pulumi deletes first exactly when the resource is delete-before-replace.
            first_delete = phases.index("delete-replaced") if "delete-replaced" in phases else None
            first_create = phases.index("create-replacement") if "create-replacement" in phases else None
            merged.delete_before_replace = first_delete is not None and (
                first_create is None or first_delete < first_create
            )
        self.steps[meta.urn] = merged
        return merged

    def _pre(self, meta: Any) -> None:
        op_name = step_op_name(meta)
        step = self._merge(meta)
        if op_name not in _REPLACE_PHASES or meta.urn not in self._started:
            self._started[meta.urn] = time.monotonic()
        if step.changes and meta.urn not in self._announced and op_name != "refresh":
            self._announced.add(meta.urn)
            if self.on_start is not None:
                self.on_start(step)

    def _done(self, meta: Any) -> None:
        step = self._merge(meta)
        if step.type == ROOT_STACK_TYPE and meta.new is not None and meta.new.outputs:
            self.outputs = dict(meta.new.outputs)
        previous = self.results.get(meta.urn)
        if step_op_name(meta) not in _FINAL_OPS or (previous is not None and not previous.ok):
            return
        self._record(StepResult(step=step, ok=True, seconds=self._elapsed(meta.urn)))

    def _failed(self, meta: Any) -> None:
        step = self._merge(meta)
        error = "\n".join(self._errors_by_urn.get(meta.urn, [])) or f"{step.op.value} failed"
        self._record(StepResult(step=step, ok=False, error=error, seconds=self._elapsed(meta.urn)))

    def _record(self, result: StepResult) -> None:
        self.results[result.step.urn] = result
        if self.on_step is not None:
            self.on_step(result)

    def _elapsed(self, urn: str) -> float:
        started = self._started.get(urn)
        return round(time.monotonic() - started, 3) if started is not None else 0.0

    def _diagnostic(self, diag: Any) -> None:
        message = clean_message(diag.message)
        if not message:
            return
        if diag.severity == "error":
            self.errors.append(message)
            if diag.urn:
                self._errors_by_urn.setdefault(diag.urn, []).append(message)
        elif diag.severity == "warning":
            prefix = f"{urn_name(diag.urn)}: " if diag.urn else ""
            self.warnings.append(prefix + message)

    def plan(self, stack: str, state_serial: int = 0, project: str = "") -> Plan:
        return Plan(
            stack=stack,
            project=project,
            steps=list(self.steps.values()),
            warnings=list(self.warnings),
            outputs=mask_value(self.outputs),
            state_serial=state_serial,
            engine=ENGINE_NAME,
        )

    def finish(self) -> None:
        """After a successful command: a changing step the CLI announced but never reported done
        (a replacement whose phases the CLI reported differently) did finish."""
        for urn, step in self.steps.items():
            if step.changes and urn not in self.results:
                self._record(StepResult(step=step, ok=True, seconds=self._elapsed(urn)))

    def apply_result(self, stack: str, outputs: dict[str, Any]) -> ApplyResult:
        return ApplyResult(stack=stack, results=list(self.results.values()), outputs=outputs)
