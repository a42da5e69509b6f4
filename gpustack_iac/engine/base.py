"""The engine interface every implementation (embedded, Pulumi Automation API) satisfies.

Only the protocol: the engines import it, and `engine/factory.py` (which imports the engines) picks one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from gpustack_iac.engine.model import ApplyResult, Plan, Step, StepResult

# A Pulumi program: a function that declares resources (run inside the root Stack); as with the
# SDK's PulumiFn, it may be a coroutine function, whose result the engine awaits.
Program = Callable[[], Awaitable[None] | None]
StepCallback = Callable[[StepResult], None]
StartCallback = Callable[[Step], None]
EngineKind = Literal["auto", "embedded", "pulumi"]


@runtime_checkable
class Engine(Protocol):
    """What the CLI calls. Both engines return the model objects of engine/model.py."""

    # Capabilities the commands ask about instead of checking which engine they hold.
    name: str
    # Whether `up` can apply resources whose providers are Pulumi plugins (aws, gcp, azure-native,
    # kubernetes): only the Pulumi CLI runs plugins; the embedded engine can plan them, not apply.
    applies_plugin_resources: bool

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
