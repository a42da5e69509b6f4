"""The `pulumi` engine: the Pulumi Automation API driving the real CLI with an inline program.

Deliberately thin: the CLI does the planning, diffing and state handling; this module sets up a
LocalWorkspace (file:// backend under the state directory by default, passphrase secrets) and
translates the CLI's engine events into the plan model (engine/model.py), so renderers, saved
plans and the CLI never know which engine ran.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpustack_iac.engine.base import Program, StartCallback, StepCallback
from gpustack_iac.engine.model import (
    ApplyResult,
    DiffKind,
    Plan,
    PropertyDiff,
    Step,
    StepOp,
    StepResult,
)
from gpustack_iac.engine.render.common import (
    SECRET_SIG_KEY,
    SECRET_SIG_VALUE,
    SECRET_TEXT,
    UNKNOWN_VALUE,
    is_secret_value,
    mask_value,
)
from gpustack_iac.engine.secrets import PASSPHRASE_ENV_VARS, create_passphrase_file, find_passphrase
from gpustack_iac.errors import EngineError, PlanStaleError, StateError, StateLockedError

ENGINE_NAME = "pulumi"
INSTALL_HINT = "curl -fsSL https://get.pulumi.com | sh"
MISSING_CLI_MESSAGE = (
    f"the pulumi CLI is not on PATH: install it with `{INSTALL_HINT}` "
    "(https://www.pulumi.com/docs/install/) or use `--engine embedded`"
)

ROOT_STACK_TYPE = "pulumi:pulumi:Stack"


def require_cli(path: str | None = None) -> str:
    """The `pulumi` executable on PATH (or `path`), else EngineError with how to install it."""
    found = shutil.which("pulumi", path=path)
    if found is None:
        raise EngineError(MISSING_CLI_MESSAGE)
    return found


# ----- translation of engine events into the plan model ----------------------------------------

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

_DIFF_KINDS: dict[str, tuple[DiffKind, bool]] = {
    "add": (DiffKind.ADD, False),
    "add-replace": (DiffKind.ADD, True),
    "delete": (DiffKind.DELETE, False),
    "delete-replace": (DiffKind.DELETE, True),
    "update": (DiffKind.UPDATE, False),
    "update-replace": (DiffKind.UPDATE, True),
}

_PATH_TOKEN = re.compile(r'\.?([^.\[\]"]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]')
_ANSI = re.compile(r"\x1b\[[0-9;]*m|<\{%[a-z]+%\}>")


def map_op(op: str) -> StepOp:
    """Pulumi's op name (`create-replacement`, `refresh`, ...) → our StepOp."""
    try:
        return _OP_MAP[op]
    except KeyError:
        raise EngineError(f"the pulumi CLI reported an unknown step kind {op!r}") from None


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
        if is_secret_value(value):
            return value
        if isinstance(seg, int) and isinstance(value, list) and 0 <= seg < len(value):
            value = value[seg]
        elif isinstance(seg, str) and isinstance(value, Mapping) and seg in value:
            value = value[seg]
        else:
            return _MISSING
    return value


def _is_secret(value: Any) -> bool:
    return is_secret_value(value) or (isinstance(value, str) and value == SECRET_TEXT)


def _contains_secret(value: Any) -> bool:
    if _is_secret(value):
        return True
    if isinstance(value, Mapping):
        return any(_contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(v) for v in value)
    return False


def _is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value == UNKNOWN_VALUE


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
    op = _op_name(meta)
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


def _drift_diffs(meta: Any) -> list[PropertyDiff]:
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


def urn_name(urn: str) -> str:
    """The resource name: everything after the last `::` of the URN."""
    return urn.rsplit("::", 1)[-1]


def step_from_metadata(meta: Any) -> Step:
    """One model Step from a StepEventMetadata (without merging replacement phases)."""
    op_name = _op_name(meta)
    state = meta.new or meta.old
    parent = state.parent if state and state.parent else None
    custom = True if state is None or state.custom is None else bool(state.custom)
    op = map_op(op_name)
    detail = ""
    diffs: list[PropertyDiff]
    if op_name == "refresh":
        vanished = meta.new is None or not meta.new.id
        diffs = [] if vanished else _drift_diffs(meta)
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


def _op_name(meta: Any) -> str:
    return str(meta.op.value if hasattr(meta.op, "value") else meta.op)


def _clean(message: str) -> str:
    return _ANSI.sub("", message).strip()


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
        op_name = _op_name(meta)
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
        op_name = _op_name(meta)
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
        if _op_name(meta) not in _FINAL_OPS or (previous is not None and not previous.ok):
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
        message = _clean(diag.message)
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


# ----- the engine ------------------------------------------------------------------------------


def _file_root(url: str) -> Path | None:
    return Path(url[len("file://"):]).expanduser() if url.startswith("file://") else None


def _command_error_message(exc: Exception) -> str:
    """The useful tail of a failed CLI command, never its whole output (it can be very long)."""
    stderr = getattr(exc, "stderr", "") or str(exc)
    lines = [_clean(line) for line in stderr.splitlines() if _clean(line)]
    return "; ".join(lines[-4:]) if lines else type(exc).__name__


def resolve_passphrase(explicit: str | None, state_url: str, stack: str) -> str:
    """The secrets passphrase: argument, GPUSTACK_PASSPHRASE, PULUMI_CONFIG_PASSPHRASE, then (file
    state only) the generated `<root>/.pulumi/passphrase-<stack>` file, created when missing."""
    file_root = _file_root(state_url)
    if file_root is not None:
        # Same lookup and generated-file convention as the embedded engine's state store,
        # so one state directory works with either engine.
        found = find_passphrase(explicit, file_root, stack)
        return (found or create_passphrase_file(file_root, stack)).value
    if explicit is not None:
        return explicit
    for name in PASSPHRASE_ENV_VARS:
        value = os.environ.get(name)
        if value is not None:
            return value
    raise StateError(f"set GPUSTACK_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE) to use the state at {state_url}")


class AutomationEngine:
    """Engine protocol (engine/base.py) implemented with `pulumi.automation`."""

    name = ENGINE_NAME

    def __init__(
        self,
        *,
        project: str,
        stack: str,
        state_url: str | None = None,
        passphrase: str | None = None,
        work_dir: Path | None = None,
    ) -> None:
        require_cli()
        self.project = project
        self.stack_name = stack
        root = Path.cwd() / ".gpustack" / "state"
        self.state_url = state_url or f"file://{root}"
        file_root = _file_root(self.state_url)
        if file_root is not None:
            file_root.mkdir(parents=True, exist_ok=True)
        # The CLI writes Pulumi.yaml / Pulumi.<stack>.yaml (with the passphrase salt) here: keep
        # it next to the state so it survives between runs.
        base = file_root if file_root is not None else Path.cwd() / ".gpustack"
        self.work_dir = work_dir or base / ".pulumi" / "workspaces" / project
        self._passphrase = resolve_passphrase(passphrase, self.state_url, stack)
        self._stack: Any = None

    def _select(self) -> Any:
        if self._stack is not None:
            return self._stack
        from pulumi import automation as auto

        self.work_dir.mkdir(parents=True, exist_ok=True)
        settings = auto.ProjectSettings(
            name=self.project, runtime="python", backend=auto.ProjectBackend(url=self.state_url)
        )
        opts = auto.LocalWorkspaceOptions(
            work_dir=str(self.work_dir),
            project_settings=settings,
            secrets_provider="passphrase",
            # Passed through the environment of the CLI process, never on its command line.
            env_vars={"PULUMI_CONFIG_PASSPHRASE": self._passphrase, "PULUMI_SKIP_UPDATE_CHECK": "true"},
        )
        workspace = self._call(lambda: auto.LocalWorkspace(opts))
        self._stack = self._call(lambda: auto.Stack.create_or_select(self.stack_name, workspace))
        return self._stack

    @staticmethod
    def _call(fn: Callable[[], Any]) -> Any:
        """Run one Automation API call, turning its exceptions into ours."""
        from pulumi.automation import errors as auto_errors

        try:
            return fn()
        except auto_errors.ConcurrentUpdateError as exc:
            raise StateLockedError(f"another update holds the stack: {_command_error_message(exc)}") from exc
        except auto_errors.CommandError as exc:
            raise EngineError(f"pulumi: {_command_error_message(exc)}") from exc
        except auto_errors.InvalidVersionError as exc:
            raise EngineError(f"pulumi CLI too old: {exc}; upgrade with `{INSTALL_HINT}`") from exc
        except FileNotFoundError as exc:
            raise EngineError(MISSING_CLI_MESSAGE) from exc

    def _serial(self) -> int:
        """The number of the stack's last update: moves whenever the state does."""
        history = self._call(lambda: self._select().history(page_size=1, show_secrets=False))
        return int(history[0].version) if history else 0

    def preview(self, program: Program, refresh: bool = True) -> Plan:
        stack = self._select()
        translator = EventTranslator()
        self._run(
            translator,
            lambda: stack.preview(program=program, refresh=refresh, on_event=translator, color="never", diff=True),
        )
        return translator.plan(self.stack_name, state_serial=self._serial(), project=self.project)

    def up(
        self,
        program: Program,
        plan: Plan | None = None,
        on_step: StepCallback | None = None,
        refresh: bool = True,
        on_start: StartCallback | None = None,
    ) -> ApplyResult:
        stack = self._select()
        if plan is not None:
            if plan.stack != self.stack_name:
                raise PlanStaleError(f"the saved plan is for stack {plan.stack!r}, not {self.stack_name!r}")
            if plan.engine != ENGINE_NAME:
                raise PlanStaleError(
                    f"the saved plan was made by the {plan.engine} engine: apply it with "
                    f"`--engine {plan.engine}` or make the plan again"
                )
            fresh = self.preview(program, refresh=refresh)
            if fresh.state_serial != plan.state_serial:
                raise PlanStaleError(
                    f"the state changed since the plan was made (update {plan.state_serial} → "
                    f"{fresh.state_serial}); run `gpustack-iac plan` again"
                )
            check_plan_current(plan, fresh)
        translator = EventTranslator(on_start=on_start, on_step=on_step)
        return self._apply(
            translator, lambda: stack.up(program=program, refresh=refresh, on_event=translator, color="never")
        )

    def destroy(self, on_step: StepCallback | None = None, on_start: StartCallback | None = None) -> ApplyResult:
        stack = self._select()
        translator = EventTranslator(on_start=on_start, on_step=on_step)
        return self._apply(translator, lambda: stack.destroy(on_event=translator, color="never"))

    def _run(self, translator: EventTranslator, run: Callable[[], Any]) -> None:
        """Run one CLI command; its error diagnostics (cleaner than its stderr) make the message."""
        try:
            self._call(run)
        except StateLockedError:
            raise
        except EngineError as exc:
            if translator.errors:
                raise EngineError("pulumi: " + "; ".join(translator.errors[-3:])) from exc
            raise

    def _apply(self, translator: EventTranslator, run: Callable[[], Any]) -> ApplyResult:
        try:
            self._run(translator, run)
        except StateLockedError:
            raise
        except EngineError:
            # A failed resource is reported as a failed step (the CLI already saved what worked);
            # anything else (program error, backend error) is an engine error.
            if not any(not r.ok for r in translator.results.values()):
                raise
        else:
            translator.finish()
        return translator.apply_result(self.stack_name, self.outputs())

    def refresh(self) -> Plan:
        """Drift of the deployed resources, read from the providers and recorded in the state, as the
        embedded engine does (and `pulumi refresh`)."""
        stack = self._select()
        translator = EventTranslator()
        self._run(translator, lambda: stack.refresh(on_event=translator, color="never"))
        return translator.plan(self.stack_name, state_serial=self._serial(), project=self.project)

    def outputs(self) -> dict[str, Any]:
        """Stack outputs; secret values come back wrapped in Pulumi's secret signature."""
        values = self._call(lambda: self._select().outputs())
        return {
            key: {SECRET_SIG_KEY: SECRET_SIG_VALUE, "value": out.value} if out.secret else out.value
            for key, out in values.items()
        }

    def export(self) -> dict[str, Any]:
        """The stack's deployment as `pulumi stack export` writes it (secrets stay encrypted)."""
        deployment = self._call(lambda: self._select().export_stack())
        return {"version": deployment.version, "deployment": dict(deployment.deployment or {})}
