"""One run of a program against the state: decides each resource's step and, outside a preview, applies it.

The SDK calls `register` from its executor (a thread pool when applying, inline in a preview); a
resource is registered only after the resources it depends on have returned, so applying inside
`register` keeps dependency order. Provider calls run outside the lock, so independent resources
are applied in parallel.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

from pulumi.dynamic import ResourceProvider

from gpustack_iac.engine.base import StartCallback, StepCallback
from gpustack_iac.engine.embedded.diff import (
    PROVIDER_KEY,
    apply_ignore_changes,
    diff_inputs,
    diff_values,
    normalize_numbers,
    path_matches,
    rewrap_like,
    top_key,
    unwrap,
)
from gpustack_iac.engine.embedded.graph import deletion_order
from gpustack_iac.engine.embedded.monitor import Registration
from gpustack_iac.engine.embedded.providers import ProviderCache, is_dynamic
from gpustack_iac.engine.embedded.urn import STACK_TYPE
from gpustack_iac.engine.model import PropertyDiff, Step, StepOp, StepResult
from gpustack_iac.engine.state import PendingOperation, ResourceState, StateStore
from gpustack_iac.engine.wire import contains_secret, contains_unknown, wrap_secret
from gpustack_iac.errors import EngineError

# A test hook, read once per run: crash tests kill `up` at every step boundary with it.
CRASH_AFTER_STEPS_ENV = "GPUSTACK_TEST_CRASH_AFTER_STEPS"
PLUGIN_HINT = "install the Pulumi CLI (https://www.pulumi.com/docs/install/) and use --engine pulumi"


class StepFailed(Exception):
    """A provider call failed; raised through the SDK so the program stops registering."""


def plugin_refusal(types: set[str]) -> EngineError:
    names = ", ".join(sorted(types))
    return EngineError(
        f"the embedded engine cannot apply resources that need a provider plugin ({names}): {PLUGIN_HINT}"
    )


@dataclass
class _Decision:
    step: Step
    inputs: dict[str, Any]
    secret_keys: set[str]
    provider: ResourceProvider


def crash_after_steps(environ: Mapping[str, str]) -> int:
    """`GPUSTACK_TEST_CRASH_AFTER_STEPS=N`: SIGKILL this process once N steps are applied (crash tests)."""
    value = environ.get(CRASH_AFTER_STEPS_ENV, "")
    return int(value) if value.isdigit() else 0


class Deployment:
    """The registration handler of one program run (a preview when `store` is None).

    `_lock` guards this object's own lists and maps. Journal writes happen outside it: the store
    orders and group-commits them itself, so one step's fsync does not stall the others.
    """

    def __init__(
        self,
        *,
        old: dict[str, ResourceState],
        providers: ProviderCache,
        store: StateStore | None,
        on_start: StartCallback | None = None,
        on_step: StepCallback | None = None,
    ) -> None:
        self.old = old
        self.providers = providers
        self.store = store
        self.dry_run = store is None
        self.on_start = on_start
        self.on_step = on_step
        self.steps: list[Step] = []
        self.results: list[StepResult] = []
        self.registered: dict[str, ResourceState] = {}
        self.stack_outputs: dict[str, Any] = {}
        self.plugin_types: set[str] = set()
        self._lock = threading.RLock()
        self._crash_after = crash_after_steps(os.environ)
        self._applied = 0

    # ----- registration entry points (called by the monitor) ------------------------------------

    def register(self, reg: Registration) -> tuple[str, dict[str, Any]]:
        if reg.import_id:
            raise EngineError(f"{reg.urn}: importing existing resources is not supported by the embedded engine")
        with self._lock:
            if reg.urn in self.registered:
                raise EngineError(f"duplicate resource URN {reg.urn}: two resources share a type and name")
        if not reg.custom:
            return self._component(reg)
        if not is_dynamic(reg.type):
            return self._plugin(reg)
        return self._dynamic(reg)

    def register_outputs(self, urn: str, outputs: dict[str, Any]) -> None:
        # The journal is written outside the lock: an fsync must not hold up the other steps.
        updated: ResourceState | None = None
        with self._lock:
            current = self.registered.get(urn)
            if current is None:
                return
            is_root = current.type == STACK_TYPE and not current.parent
            if is_root:
                self.stack_outputs = outputs
            if outputs != current.outputs:
                updated = replace(current, outputs=outputs)
                self.registered[urn] = updated
        if self.store is not None:
            if is_root:
                self.store.set_outputs(outputs)
            if updated is not None:
                self.store.end(urn, updated)

    # ----- kinds of resources -------------------------------------------------------------------

    def _state(self, reg: Registration, inputs: dict[str, Any], id_: str, outputs: dict[str, Any]) -> ResourceState:
        return ResourceState(
            urn=reg.urn,
            type=reg.type,
            custom=reg.custom,
            id=id_,
            inputs=inputs,
            outputs=outputs,
            parent=reg.parent,
            dependencies=list(reg.dependencies),
            property_dependencies={k: list(v) for k, v in reg.property_dependencies.items()},
            provider=reg.provider,
            protect=reg.protect,
            retain_on_delete=reg.retain_on_delete,
            delete_before_replace=bool(reg.delete_before_replace),
            ignore_changes=list(reg.ignore_changes),
            replace_on_changes=list(reg.replace_on_changes),
        )

    def _step(self, reg: Registration, op: StepOp, diffs: list[PropertyDiff], **kw: Any) -> Step:
        return Step(
            urn=reg.urn,
            type=reg.type,
            name=reg.name,
            op=op,
            custom=reg.custom,
            parent=reg.parent or None,
            diffs=diffs,
            protect=reg.protect,
            retain_on_delete=reg.retain_on_delete,
            **kw,
        )

    def _component(self, reg: Registration) -> tuple[str, dict[str, Any]]:
        old = self.old.get(reg.urn)
        diffs = diff_inputs(old.inputs if old else {}, reg.inputs)
        op = StepOp.CREATE if old is None else StepOp.UPDATE if diffs else StepOp.SAME
        new = self._state(reg, reg.inputs, "", old.outputs if old else {})
        with self._lock:
            self.steps.append(self._step(reg, op, diffs))
            self.registered[reg.urn] = new
        if self.store is not None and new != old:
            self.store.end(reg.urn, new)
        return "", {}

    def _plugin(self, reg: Registration) -> tuple[str, dict[str, Any]]:
        """A resource whose provider is a plugin: planned from its inputs, never applied here."""
        old = self.old.get(reg.urn)
        news = apply_ignore_changes(old.inputs, reg.inputs, reg.ignore_changes) if old else reg.inputs
        diffs = diff_inputs(old.inputs if old else {}, news)
        reasons = self._replace_on_changes(reg, diffs)
        if old is None:
            op = StepOp.CREATE
        elif old.type != reg.type:
            op, reasons = StepOp.REPLACE, reasons or ["type"]
        else:
            op = StepOp.REPLACE if reasons else StepOp.UPDATE if diffs else StepOp.SAME
        self._refuse_protected_replace(old, op, reasons)
        step = self._step(
            reg,
            op,
            self._mark_forced(diffs, reasons),
            replace_reasons=reasons,
            delete_before_replace=bool(reg.delete_before_replace),
            detail="planned from inputs only: outputs are known after apply by the Pulumi engine",
        )
        with self._lock:
            self.steps.append(step)
            if op is not StepOp.SAME:
                self.plugin_types.add(reg.type)
        if op is not StepOp.SAME and not self.dry_run:
            raise plugin_refusal({reg.type})
        new = self._state(reg, news, old.id if old else "", old.outputs if old else {})
        with self._lock:
            self.registered[reg.urn] = new
        if self.store is not None and old is not None and new != old:
            self.store.end(reg.urn, new)
        if old is None:
            return "", {}
        if op is StepOp.SAME:
            return old.id, old.outputs
        return (old.id if op is StepOp.UPDATE else ""), {}

    def _dynamic(self, reg: Registration) -> tuple[str, dict[str, Any]]:
        decision = self._decide(reg)
        step = decision.step
        with self._lock:
            self.steps.append(step)
        old = self.old.get(reg.urn)
        if self.dry_run:
            new = self._planned_state(reg, decision, old)
            with self._lock:
                self.registered[reg.urn] = new
            return new.id, new.outputs
        new = self._apply(reg, decision, old)
        with self._lock:
            self.registered[reg.urn] = new
        return new.id, new.outputs

    # ----- deciding -----------------------------------------------------------------------------

    def _replace_on_changes(self, reg: Registration, diffs: list[PropertyDiff]) -> list[str]:
        out: list[str] = []
        for pattern in reg.replace_on_changes:
            for d in diffs:
                if path_matches(pattern, d.path) and d.path not in out:
                    out.append(d.path)
        return out

    @staticmethod
    def _mark_forced(diffs: list[PropertyDiff], reasons: list[str]) -> list[PropertyDiff]:
        if not reasons:
            return diffs
        return [
            replace(d, forces_replace=True)
            if any(path_matches(r, d.path) or top_key(d.path) == r for r in reasons)
            else d
            for d in diffs
        ]

    @staticmethod
    def _refuse_protected_replace(old: ResourceState | None, op: StepOp, reasons: list[str]) -> None:
        if old is not None and old.protect and op is StepOp.REPLACE:
            raise EngineError(
                f"{old.urn} is protected: refusing to replace it (a change to {', '.join(reasons)} forces "
                "replacement); set protect=False and run up first if you mean it"
            )

    def _decide(self, reg: Registration) -> _Decision:
        old = self.old.get(reg.urn)
        news = apply_ignore_changes(old.inputs, reg.inputs, reg.ignore_changes) if old else dict(reg.inputs)
        secret_keys = {k for k, v in news.items() if contains_secret(v)} | set(reg.additional_secret_outputs)
        secret_keys.discard(PROVIDER_KEY)
        provider = self.providers.get(reg.urn, news, old.inputs if old else {}, old.outputs if old else {})
        unknown = contains_unknown(news)
        if unknown:
            # A provider cannot check or diff values nobody knows yet: compare inputs instead.
            checked = news
        else:
            result = provider.check(unwrap(old.inputs) if old else {}, unwrap(news))
            if result.failures:
                lines = [f"{reg.urn}: {f.property}: {f.reason}" for f in result.failures]
                raise EngineError("invalid inputs:\n" + "\n".join(lines))
            checked = normalize_numbers(dict(result.inputs))
            checked[PROVIDER_KEY] = news[PROVIDER_KEY]
            for key in secret_keys & set(checked):
                checked[key] = rewrap_like(news[key], checked[key]) if key in news else wrap_secret(checked[key])
        detail = ""
        reasons: list[str] = []
        dbr_from_provider = False
        if old is None:
            op = StepOp.CREATE
            diffs = diff_inputs({}, checked)
        else:
            diffs = diff_inputs(old.inputs, checked)
            changes = bool(diffs)
            if not unknown:
                result_diff = provider.diff(old.id, unwrap(old.outputs), unwrap(checked))
                if result_diff.changes is not None:
                    changes = bool(result_diff.changes)
                if changes:
                    reasons = [str(r) for r in result_diff.replaces or []]
                dbr_from_provider = bool(result_diff.delete_before_replace)
                if changes and not diffs:
                    # The inputs did not change but the live resource no longer matches them (drift).
                    live = {k: old.outputs[k] for k in checked if k != PROVIDER_KEY and k in old.outputs}
                    wanted = {k: v for k, v in checked.items() if k != PROVIDER_KEY and k in old.outputs}
                    diffs = diff_values(live, wanted)
                    detail = "the live resource differs from its declaration"
            for path in self._replace_on_changes(reg, diffs):
                if path not in reasons:
                    reasons.append(path)
            if old.type != reg.type and "type" not in reasons:
                reasons.append("type")
            op = StepOp.REPLACE if reasons else StepOp.UPDATE if changes else StepOp.SAME
            self._refuse_protected_replace(old, op, reasons)
        dbr = reg.delete_before_replace if reg.delete_before_replace is not None else dbr_from_provider
        step = self._step(
            reg,
            op,
            self._mark_forced(diffs, reasons),
            replace_reasons=reasons if op is StepOp.REPLACE else [],
            delete_before_replace=bool(dbr) and op is StepOp.REPLACE,
            detail=detail,
        )
        return _Decision(step=step, inputs=checked, secret_keys=secret_keys, provider=provider)

    def _planned_state(self, reg: Registration, d: _Decision, old: ResourceState | None) -> ResourceState:
        """What a preview tells the program: known inputs now, computed outputs unknown."""
        op = d.step.op
        if op is StepOp.SAME and old is not None:
            return self._state(reg, d.inputs, old.id, old.outputs)
        id_ = old.id if op is StepOp.UPDATE and old is not None else ""
        return self._state(reg, d.inputs, id_, dict(d.inputs))

    # ----- applying -----------------------------------------------------------------------------

    def _outputs(self, outs: dict[str, Any] | None, d: _Decision) -> dict[str, Any]:
        result: dict[str, Any] = normalize_numbers(dict(outs or {}))
        result[PROVIDER_KEY] = d.inputs[PROVIDER_KEY]
        for key in d.secret_keys & set(result):
            result[key] = rewrap_like(d.inputs[key], result[key]) if key in d.inputs else wrap_secret(result[key])
        return result

    def _apply(self, reg: Registration, d: _Decision, old: ResourceState | None) -> ResourceState:
        store = self.store
        assert store is not None
        step, provider = d.step, d.provider
        if step.op is StepOp.SAME:
            assert old is not None
            new = self._state(reg, d.inputs, old.id, old.outputs)
            if new != old:
                store.end(reg.urn, new)
            return new
        started = time.monotonic()
        self._started(step)
        pending = self._state(reg, d.inputs, "", {})
        try:
            if step.op is StepOp.CREATE:
                new = self._create(store, reg, d, pending, provider)
            elif step.op is StepOp.UPDATE:
                assert old is not None
                store.begin(PendingOperation(old, "updating"))
                try:
                    result = provider.update(old.id, unwrap(old.outputs), unwrap(d.inputs))
                except BaseException:
                    store.end(reg.urn, old)
                    raise
                new = self._state(reg, d.inputs, old.id, self._outputs(result.outs, d))
                store.end(reg.urn, new)
            else:
                assert old is not None
                new = self._replace(store, reg, d, pending, old, provider)
        except StepFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - any provider failure becomes a failed step
            self._finished(StepResult(step=step, ok=False, error=f"{type(exc).__name__}: {exc}",
                                      seconds=time.monotonic() - started))
            raise StepFailed(f"{step.op.value} {reg.urn} failed: {exc}") from exc
        self._finished(StepResult(step=step, ok=True, seconds=time.monotonic() - started))
        return new

    def _create(
        self,
        store: StateStore,
        reg: Registration,
        d: _Decision,
        pending: ResourceState,
        provider: ResourceProvider,
        restore: ResourceState | None = None,
    ) -> ResourceState:
        """Create; on failure the state goes back to `restore` (what the URN held before, if anything)."""
        store.begin(PendingOperation(pending, "creating"))
        try:
            result = provider.create(unwrap(d.inputs))
            if not result.id:
                raise EngineError(f"{reg.urn}: the provider's create returned no id")
        except BaseException:
            store.end(reg.urn, restore)
            raise
        new = self._state(reg, d.inputs, str(result.id), self._outputs(result.outs, d))
        store.end(reg.urn, new)
        return new

    def _delete_one(self, store: StateStore, old: ResourceState) -> None:
        """Delete (or, with retain_on_delete, forget) one resource, journaled around the provider call."""
        store.begin(PendingOperation(old, "deleting"))
        if old.custom and not old.retain_on_delete:
            if not is_dynamic(old.type):
                raise plugin_refusal({old.type})
            provider = self.providers.get(old.urn, old.outputs, old.inputs)
            try:
                provider.delete(old.id, unwrap(old.outputs))
            except BaseException:
                # Pulumi's rule: a failed delete leaves the resource in place.
                if not old.delete:
                    store.end(old.urn, old)
                raise
        store.end(old.urn, None)

    def _replace(
        self,
        store: StateStore,
        reg: Registration,
        d: _Decision,
        pending: ResourceState,
        old: ResourceState,
        provider: ResourceProvider,
    ) -> ResourceState:
        if d.step.delete_before_replace:
            self._delete_one(store, old)
            return self._create(store, reg, d, pending, provider)
        new = self._create(store, reg, d, pending, provider, restore=old)
        # A provider that re-created the resource under the same identity replaced it in place:
        # deleting "the old one" would delete the new one.
        if new.id != old.id:
            # The state now keeps the old instance marked for deletion: if its delete fails it stays
            # that way (and is retried by the next run) instead of displacing the new one.
            self._delete_one(store, replace(old, delete=True))
        return new

    def _started(self, step: Step) -> None:
        if self.on_start is not None:
            self.on_start(step)

    def _finished(self, result: StepResult) -> None:
        with self._lock:
            self.results.append(result)
            self._applied += 1
            crash = self._applied == self._crash_after
        if self.on_step is not None:
            self.on_step(result)
        if crash:
            # The step is journaled: dying here is a kill -9 exactly at a step boundary.
            os.kill(os.getpid(), signal.SIGKILL)

    # ----- after the program: resources no longer declared -------------------------------------

    def plan_deletes(self, doomed: list[ResourceState]) -> list[tuple[Step, ResourceState]]:
        """Delete steps, dependents first, for what the state has and this run did not declare.

        `doomed` are old halves of replacements a crash interrupted: they go too.
        """
        undeclared = [r for urn, r in self.old.items() if urn not in self.registered]
        out: list[tuple[Step, ResourceState]] = []
        for res in deletion_order([*undeclared, *doomed]):
            if res.protect and not res.delete:
                raise EngineError(
                    f"{res.urn} is protected: refusing to delete it; set protect=False and run up first "
                    "if you mean it"
                )
            name = res.urn.rsplit("::", 1)[-1]
            detail = "retained: dropped from the state, not deleted" if res.retain_on_delete else ""
            if res.delete:
                detail = "left over from an interrupted replacement"
            step = Step(
                urn=res.urn,
                type=res.type,
                name=name,
                op=StepOp.DELETE,
                custom=res.custom,
                parent=res.parent or None,
                diffs=diff_inputs(res.inputs, {}),
                protect=res.protect,
                retain_on_delete=res.retain_on_delete,
                detail=detail,
            )
            if res.custom and not res.retain_on_delete and not is_dynamic(res.type):
                self.plugin_types.add(res.type)
            out.append((step, res))
        return out

    def apply_deletes(self, deletes: list[tuple[Step, ResourceState]]) -> None:
        store = self.store
        assert store is not None
        for step, res in deletes:
            started = time.monotonic()
            self._started(step)
            try:
                self._delete_one(store, res)
            except Exception as exc:  # noqa: BLE001 - reported as a failed step, the rest is not attempted
                self._finished(StepResult(step=step, ok=False, error=f"{type(exc).__name__}: {exc}",
                                          seconds=time.monotonic() - started))
                return
            self._finished(StepResult(step=step, ok=True, seconds=time.monotonic() - started))
