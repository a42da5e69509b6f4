"""The engine interface every implementation (embedded, Pulumi Automation API) satisfies."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from gpustack_iac.engine.model import ApplyResult, Plan, Step, StepResult
from gpustack_iac.errors import EngineError

if TYPE_CHECKING:
    from gpustack_iac.engine.state import StateStore

# A Pulumi program: a function that declares resources (run inside the root Stack).
Program = Callable[[], None]
StepCallback = Callable[[StepResult], None]
StartCallback = Callable[[Step], None]
EngineKind = Literal["auto", "embedded", "pulumi"]

PULUMI_INSTALL_URL = "https://www.pulumi.com/docs/install/"


@runtime_checkable
class Engine(Protocol):
    """What the CLI calls. Both engines return the model objects of engine/model.py."""

    def preview(self, program: Program, refresh: bool = True) -> Plan: ...

    def up(
        self,
        program: Program,
        plan: Plan | None = None,
        on_step: StepCallback | None = None,
        refresh: bool = True,
        on_start: StartCallback | None = None,
    ) -> ApplyResult: ...

    def destroy(
        self, on_step: StepCallback | None = None, on_start: StartCallback | None = None
    ) -> ApplyResult: ...

    def refresh(self) -> Plan: ...

    def outputs(self) -> dict[str, Any]: ...

    def export(self) -> dict[str, Any]: ...


def pulumi_cli_available() -> bool:
    return shutil.which("pulumi") is not None


def select_engine(
    kind: EngineKind,
    *,
    project: str,
    stack: str,
    state_url: str | None = None,
    passphrase: str | None = None,
    work_dir: Path | None = None,
    store: StateStore | None = None,
) -> Engine:
    """Pick an engine: `auto` means the Pulumi CLI when it is on PATH, else the embedded one.

    `state_url` is the state location (`file://DIR`; None means `.gpustack/state` under `work_dir`).
    `store`, when given, is the embedded engine's store: a caller that also reads the state shares
    one store, and so derives the passphrase key (deliberately slow) once.
    """
    base = work_dir if work_dir is not None else Path.cwd()
    url = state_url if state_url else f"file://{base / '.gpustack' / 'state'}"
    if kind == "auto":
        kind = "pulumi" if pulumi_cli_available() else "embedded"
    if kind == "embedded":
        from gpustack_iac.engine.embedded.engine import EmbeddedEngine
        from gpustack_iac.engine.state import StateStore

        store = store if store is not None else StateStore.from_url(url, project, stack, passphrase)
        return EmbeddedEngine(project=project, stack=stack, store=store)
    if kind == "pulumi":
        if not pulumi_cli_available():
            raise EngineError(
                "the pulumi CLI is not on PATH: install it (" + PULUMI_INSTALL_URL + ") or use --engine embedded"
            )
        from gpustack_iac.engine import automation

        engine: Engine = automation.AutomationEngine(  # type: ignore[attr-defined]
            project=project, stack=stack, state_url=url, passphrase=passphrase, work_dir=work_dir
        )
        return engine
    raise EngineError(f"unknown engine {kind!r}: expected auto, embedded or pulumi")
