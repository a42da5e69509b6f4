"""The embedded engine: Pulumi's semantics for Python dynamic providers, in this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from gpustack_iac.engine.base import Program, StartCallback, StepCallback
from gpustack_iac.engine.embedded.deployment import Deployment, StepFailed, plugin_refusal
from gpustack_iac.engine.embedded.diff import PROVIDER_KEY, diff_values, normalize_numbers, rewrap_like, unwrap
from gpustack_iac.engine.embedded.monitor import EmbeddedMonitor, LogEngine
from gpustack_iac.engine.embedded.providers import ProviderCache, is_dynamic
from gpustack_iac.engine.embedded.runner import DEFAULT_PARALLEL, run_program
from gpustack_iac.engine.history import KINDS, UpdateRecord, environment, resource_changes
from gpustack_iac.engine.model import ApplyResult, Plan, Step, StepOp
from gpustack_iac.engine.state import Checkpoint, PendingOperation, ResourceState, StateStore
from gpustack_iac.engine.wire import UNKNOWN, contains_secret, is_secret
from gpustack_iac.errors import EngineError, GpustackError, PlanStaleError

SECRET_MASK = "[secret]"
UNKNOWN_MASK = "(known after apply)"


def mask_outputs(value: Any) -> Any:
    """Stack outputs as a plan shows them: secrets hidden, unknowns named."""
    if is_secret(value):
        return SECRET_MASK
    if value == UNKNOWN:
        return UNKNOWN_MASK
    if isinstance(value, dict):
        return {k: mask_outputs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_outputs(v) for v in value]
    return value


def step_signature(steps: list[Step]) -> list[tuple[str, str, tuple[str, ...]]]:
    """What must match between a saved plan and the plan computed when applying it."""
    return [(s.urn, s.op.value, tuple(sorted(d.path for d in s.diffs))) for s in steps if s.changes]


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


class _Loaded:
    """The state as an operation starts: live resources by URN, leftovers, warnings."""

    def __init__(self, cp: Checkpoint) -> None:
        self.checkpoint = cp
        self.old: dict[str, ResourceState] = {r.urn: r for r in cp.resources if not r.delete}
        self.doomed: list[ResourceState] = [r for r in cp.resources if r.delete]
        self.warnings: list[str] = []
        for op in cp.pending_operations:
            self.warnings.append(
                f"an interrupted operation ({op.type} {op.resource.urn}) was found in the state; "
                "this run reconciles it from the current declaration"
            )


class EmbeddedEngine:
    """Runs Pulumi programs in-process; state and lock come from a StateStore."""

    name = "embedded"

    def __init__(self, project: str, stack: str, store: StateStore, parallel: int = DEFAULT_PARALLEL) -> None:
        self.project = project
        self.stack = stack
        self.store = store
        self.parallel = parallel
        self.providers = ProviderCache(project)

    # ----- the Engine interface ---------------------------------------------------------------

    def preview(self, program: Program, refresh: bool = True) -> Plan:
        with self.store.lock("preview"):
            loaded = _Loaded(self.store.load())
            refresh_steps = self._refresh(loaded, persist=False) if refresh else []
            plan, _ = self._preview(program, loaded, refresh_steps)
            return plan

    def up(
        self,
        program: Program,
        plan: Plan | None = None,
        on_step: StepCallback | None = None,
        refresh: bool = True,
        on_start: StartCallback | None = None,
    ) -> ApplyResult:
        with self.store.lock("up"), self._recorded("up") as outcome:
            result = self._up(program, plan, on_step, refresh, on_start)
            outcome.finish(result.ok, [r.step for r in result.results if r.ok])
            return result

    def destroy(self, on_step: StepCallback | None = None, on_start: StartCallback | None = None) -> ApplyResult:
        with self.store.lock("destroy"), self._recorded("destroy") as outcome:
            result = self._destroy(on_step, on_start)
            outcome.finish(result.ok, [r.step for r in result.results if r.ok])
            return result

    def _destroy(self, on_step: StepCallback | None, on_start: StartCallback | None) -> ApplyResult:
        loaded = _Loaded(self.store.load())
        deployment = Deployment(
            old=loaded.old, providers=self.providers, store=self.store, on_start=on_start, on_step=on_step
        )
        # Refusals (protected resources, plugin types) come before anything is touched.
        deletes = deployment.plan_deletes(loaded.doomed)
        if deployment.plugin_types:
            raise plugin_refusal(deployment.plugin_types)
        self._clear_pending(loaded)
        deployment.apply_deletes(deletes)
        if all(r.ok for r in deployment.results) and loaded.checkpoint.outputs:
            self.store.set_outputs({})
        return ApplyResult(stack=self.stack, results=deployment.results, outputs={})

    def refresh(self) -> Plan:
        with self.store.lock("refresh"):
            with self._recorded("refresh") as outcome:
                loaded = _Loaded(self.store.load())
                steps = self._refresh(loaded, persist=True)
                outcome.finish(True, steps)
            serial = self.store.load().serial
            return Plan(stack=self.stack, steps=steps, warnings=loaded.warnings, state_serial=serial, engine=self.name)

    def outputs(self) -> dict[str, Any]:
        if not self.store.exists():
            return {}
        return self.store.load().outputs

    def export(self) -> dict[str, Any]:
        return self.store.export()

    # ----- pieces -----------------------------------------------------------------------------

    def _run(self, program: Program, deployment: Deployment, dry_run: bool) -> None:
        log_engine = LogEngine()
        monitor = EmbeddedMonitor(self.project, self.stack, deployment)
        try:
            run_program(
                program,
                monitor,
                log_engine,
                project=self.project,
                stack=self.stack,
                dry_run=dry_run,
                parallel=self.parallel,
            )
        except GpustackError:
            raise
        except StepFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - the program's own failure, reported in one line
            cause = _find_cause(exc)
            if cause is not None:
                raise cause from exc
            detail = "; ".join(log_engine.errors) or f"{type(exc).__name__}: {exc}"
            raise EngineError(f"the program failed: {detail}") from exc

    def _preview(self, program: Program, loaded: _Loaded, refresh_steps: list[Step]) -> tuple[Plan, Deployment]:
        deployment = Deployment(old=dict(loaded.old), providers=self.providers, store=None)
        self._run(program, deployment, dry_run=True)
        deletes = deployment.plan_deletes(loaded.doomed)
        warnings = list(loaded.warnings)
        if deployment.plugin_types:
            warnings.append(
                "resources of " + ", ".join(sorted(deployment.plugin_types)) + " need a provider plugin: the "
                "embedded engine plans them from their inputs but cannot apply them; install the Pulumi CLI "
                "(https://www.pulumi.com/docs/install/) and use --engine pulumi"
            )
        plan = Plan(
            stack=self.stack,
            steps=[*refresh_steps, *deployment.steps, *(s for s, _ in deletes)],
            warnings=warnings,
            outputs=mask_outputs(deployment.stack_outputs),
            state_serial=loaded.checkpoint.serial,
            engine=self.name,
        )
        return plan, deployment

    def _up(
        self,
        program: Program,
        saved: Plan | None,
        on_step: StepCallback | None,
        refresh: bool,
        on_start: StartCallback | None,
    ) -> ApplyResult:
        loaded = _Loaded(self.store.load())
        serial = loaded.checkpoint.serial
        if saved is not None and saved.state_serial != serial:
            raise PlanStaleError(
                f"the saved plan was made against state version {saved.state_serial}, the state is now at "
                f"version {serial}: make a new plan"
            )
        # What a refresh reads is the truth whatever happens next, so it is recorded straight away.
        refresh_steps = self._refresh(loaded, persist=True) if refresh else []
        plan, preview = self._preview(program, loaded, refresh_steps)
        if saved is not None and step_signature(saved.steps) != step_signature(plan.steps):
            raise PlanStaleError("the saved plan no longer matches the configuration and state: make a new plan")
        if preview.plugin_types:
            raise plugin_refusal(preview.plugin_types)
        self._clear_pending(loaded)
        if not any(s.changes for s in plan.steps if s.op is not StepOp.REFRESH_DRIFT):
            # Nothing to apply: the preview's outputs are all known, as every resource is unchanged.
            # Options such as protect may still have changed: record them as a real run would.
            for urn, planned in preview.registered.items():
                if planned != loaded.old.get(urn):
                    self.store.end(urn, planned)
            if preview.stack_outputs != loaded.checkpoint.outputs:
                self.store.set_outputs(preview.stack_outputs)
            return ApplyResult(stack=self.stack, results=[], outputs=preview.stack_outputs)
        deployment = Deployment(
            old=dict(loaded.old), providers=self.providers, store=self.store, on_start=on_start, on_step=on_step
        )
        try:
            self._run(program, deployment, dry_run=False)
        except StepFailed:
            return ApplyResult(stack=self.stack, results=deployment.results, outputs=deployment.stack_outputs)
        deployment.apply_deletes(deployment.plan_deletes(loaded.doomed))
        return ApplyResult(stack=self.stack, results=deployment.results, outputs=deployment.stack_outputs)

    def _refresh(self, loaded: _Loaded, persist: bool) -> list[Step]:
        """Read every custom resource back from its provider; update `loaded.old` (and the state if `persist`)."""
        steps: list[Step] = []
        for res in list(loaded.old.values()):
            if not res.custom or not res.id:
                continue
            if not is_dynamic(res.type):
                loaded.warnings.append(f"{res.urn} was not refreshed: its provider is a plugin")
                continue
            provider = self.providers.get(res.urn, res.outputs, res.inputs)
            try:
                result = provider.read(res.id, unwrap(res.outputs))
            except Exception as exc:  # noqa: BLE001 - a provider failure named with its resource
                raise EngineError(f"refreshing {res.urn} failed: {type(exc).__name__}: {exc}") from exc
            if not result.id:
                steps.append(
                    Step(
                        urn=res.urn,
                        type=res.type,
                        name=_name(res.urn),
                        op=StepOp.REFRESH_DRIFT,
                        custom=True,
                        parent=res.parent or None,
                        protect=res.protect,
                        detail="vanished: it no longer exists, and is created again if still declared",
                    )
                )
                del loaded.old[res.urn]
                if persist:
                    self.store.finished(PendingOperation(res, "reading"), None)
                continue
            refreshed = self._refreshed_state(res, result.id, result.outs, result.inputs)
            if refreshed is res:
                continue  # the common case: the live resource is as recorded
            diffs = (
                []
                if refreshed.outputs == res.outputs
                else diff_values(
                    {k: v for k, v in res.outputs.items() if k != PROVIDER_KEY},
                    {k: v for k, v in refreshed.outputs.items() if k != PROVIDER_KEY},
                )
            )
            if diffs:
                steps.append(
                    Step(
                        urn=res.urn,
                        type=res.type,
                        name=_name(res.urn),
                        op=StepOp.REFRESH_DRIFT,
                        custom=True,
                        parent=res.parent or None,
                        diffs=diffs,
                        protect=res.protect,
                        detail="changed outside of this tool",
                    )
                )
            if refreshed != res:
                loaded.old[res.urn] = refreshed
                if persist:
                    self.store.finished(PendingOperation(res, "reading"), refreshed)
        return steps

    @staticmethod
    def _refreshed_state(
        res: ResourceState, id_: str, outs: dict[str, Any] | None, inputs: dict[str, Any] | None
    ) -> ResourceState:
        def rewrap(new: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = normalize_numbers(dict(new))
            for key, value in like.items():
                # Secrets nested in a property (one env value of a definition) are put back where
                # they were: a provider reads values back in the clear.
                if key in out and contains_secret(value):
                    out[key] = rewrap_like(value, out[key])
            if PROVIDER_KEY in like:
                out[PROVIDER_KEY] = like[PROVIDER_KEY]
            return out

        outputs = rewrap(outs or {}, res.outputs)
        new_inputs = res.inputs if inputs is None else rewrap(inputs, res.inputs)
        new_id = str(id_)
        if new_id == res.id and outputs == res.outputs and new_inputs == res.inputs:
            return res  # unchanged: no new object to build and compare field by field
        return replace(res, id=new_id, outputs=outputs, inputs=new_inputs)

    def _clear_pending(self, loaded: _Loaded) -> None:
        """Close operations a crash left open; the current run re-does whatever they were doing."""
        for op in loaded.checkpoint.pending_operations:
            urn = op.resource.urn
            current = loaded.old.get(urn)
            if current is not None:
                self.store.end(urn, current)
            elif not any(d.urn == urn for d in loaded.doomed):
                self.store.end(urn, None)
        loaded.checkpoint.pending_operations = []

    @contextmanager
    def _recorded(self, operation: str) -> Iterator[_Outcome]:
        """Compact the state at the end of an operation, then add its record to the stack's history
        (failed, also when it raised), as Pulumi's DIY backend does after every update."""
        outcome = _Outcome(time.time())
        try:
            yield outcome
        finally:
            self._compact_if_journaled()
            record = UpdateRecord(
                kind=KINDS[operation], start_time=int(outcome.started), end_time=int(time.time()),
                result="succeeded" if outcome.ok else "failed", version=self.store.serial(),
                resource_changes=outcome.changes, environment=environment(),
            )
            self.store.add_history(record)

    def _compact_if_journaled(self) -> None:
        if self.store.needs_compaction():
            self.store.compact()


@dataclass
class _Outcome:
    """What an operation reports for its history record; `ok` stays False unless it finished."""

    started: float
    ok: bool = False
    changes: dict[str, int] = field(default_factory=dict)

    def finish(self, ok: bool, steps: list[Step]) -> None:
        self.ok = ok
        self.changes = resource_changes(steps)


def _find_cause(exc: BaseException) -> GpustackError | StepFailed | None:
    """Our own errors raised inside the monitor come back through the SDK, possibly chained."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, (GpustackError, StepFailed)):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


__all__ = ["EmbeddedEngine", "mask_outputs", "step_signature"]
