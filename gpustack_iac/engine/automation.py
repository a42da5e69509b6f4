"""The `pulumi` engine: the Pulumi Automation API driving the real CLI with an inline program.

Deliberately thin: the CLI does the planning, diffing and state handling; this module sets up a
LocalWorkspace (file:// backend under the state directory by default, passphrase secrets), runs
the CLI's commands and hands their engine events to the EventTranslator (engine/pulumi_events.py),
which turns them into the plan model (engine/model.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpustack_iac.engine.base import Program, StartCallback, StepCallback
from gpustack_iac.engine.model import ApplyResult, Plan
from gpustack_iac.engine.pulumi_cli import (
    ENGINE_NAME,
    INSTALL_HINT,
    MISSING_CLI_MESSAGE,
    clean_message,
    require_cli,
)
from gpustack_iac.engine.pulumi_events import EventTranslator
from gpustack_iac.engine.pulumi_plan_check import check_plan_current
from gpustack_iac.engine.secrets import PASSPHRASE_ENV_VARS, create_passphrase_file, find_passphrase
from gpustack_iac.engine.wire import wrap_secret
from gpustack_iac.errors import EngineError, PlanStaleError, StateError, StateLockedError


def _file_root(url: str) -> Path | None:
    return Path(url[len("file://"):]).expanduser() if url.startswith("file://") else None


def _command_error_message(exc: Exception) -> str:
    """The useful tail of a failed CLI command, never its whole output (it can be very long)."""
    stderr = getattr(exc, "stderr", "") or str(exc)
    lines = [clean_message(line) for line in stderr.splitlines() if clean_message(line)]
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
    applies_plugin_resources = True  # the Pulumi CLI runs the provider plugins

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
        # Keywords: LocalWorkspace's first parameter is work_dir, not a LocalWorkspaceOptions (passing
        # one there made the whole options object the working directory).
        workspace = self._call(lambda: auto.LocalWorkspace(
            work_dir=str(self.work_dir),
            project_settings=settings,
            secrets_provider="passphrase",
            # Passed through the environment of the CLI process, never on its command line.
            env_vars={"PULUMI_CONFIG_PASSPHRASE": self._passphrase, "PULUMI_SKIP_UPDATE_CHECK": "true"},
        ))
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
            key: wrap_secret(out.value) if out.secret else out.value
            for key, out in values.items()
        }

    def export(self) -> dict[str, Any]:
        """The stack's deployment as `pulumi stack export` writes it (secrets stay encrypted)."""
        deployment = self._call(lambda: self._select().export_stack())
        return {"version": deployment.version, "deployment": dict(deployment.deployment or {})}
