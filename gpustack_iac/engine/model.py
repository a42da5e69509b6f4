"""What engines produce and renderers show: plans, steps and property diffs.

Both engines (embedded and Automation API) translate their work into these objects, so the
renderers, the saved-plan file and the CLI never know which engine ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

PLAN_FORMAT_VERSION = 1


class StepOp(str, Enum):
    SAME = "same"
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"  # create-before-delete unless delete_before_replace
    DELETE = "delete"
    READ = "read"  # refresh of a resource
    REFRESH_DRIFT = "drift"  # refresh found the real resource differs (or vanished)

    @property
    def symbol(self) -> str:
        return {
            StepOp.SAME: " ",
            StepOp.CREATE: "+",
            StepOp.UPDATE: "~",
            StepOp.REPLACE: "+-",
            StepOp.DELETE: "-",
            StepOp.READ: ">",
            StepOp.REFRESH_DRIFT: "!",
        }[self]


class DiffKind(str, Enum):
    ADD = "add"
    DELETE = "delete"
    UPDATE = "update"


@dataclass(frozen=True)
class PropertyDiff:
    """One changed input property. Secret values are never carried here: `secret` hides them."""

    path: str  # "commands[0]", "groups[1].replicas"
    kind: DiffKind
    old: Any = None
    new: Any = None
    forces_replace: bool = False
    secret: bool = False
    unknown: bool = False  # the new value is only known after apply


@dataclass
class Step:
    urn: str
    type: str  # "gpustack:local:Host", "aws:ec2/instance:Instance", "gpustack:index:Service" (component)
    name: str
    op: StepOp
    custom: bool = True  # False for components
    parent: str | None = None
    diffs: list[PropertyDiff] = field(default_factory=list)
    replace_reasons: list[str] = field(default_factory=list)  # property paths that force replacement
    delete_before_replace: bool = False
    protect: bool = False
    retain_on_delete: bool = False
    detail: str = ""  # free text, e.g. why a refresh planned re-creation

    @property
    def changes(self) -> bool:
        return self.op not in (StepOp.SAME, StepOp.READ)


@dataclass(frozen=True)
class ConfigChange:
    """A configuration-level line of the plan: what a reviewer reads first."""

    kind: str  # "fleet", "gateway", "service", "group", "router", "volume"
    name: str  # "llm" or "llm/a100-gpu" for a group
    summary: str  # "replicas 1..3 → 2..4 (in place)", "image changed → rolling update, 3 replicas"
    disruptive: bool = False  # restarts or deletes something that serves traffic


@dataclass
class Plan:
    stack: str
    steps: list[Step] = field(default_factory=list)
    config_changes: list[ConfigChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # planned stack outputs, secrets masked
    config_fingerprint: str = ""  # hash of the normalised configuration the plan was made from
    state_serial: int = 0  # the state version the plan was made against
    engine: str = "embedded"
    format_version: int = PLAN_FORMAT_VERSION
    project: str = ""
    config_paths: list[str] = field(default_factory=list)  # what `up PLANFILE` compiles again, to check nothing moved
    config_recursive: bool = False  # whether directories among config_paths were read recursively (`--recursive`)
    cost: dict[str, Any] | None = None  # hourly cost from the catalog (gpustack_iac/cost.py), None when not estimated
    hosts: list[str] = field(default_factory=list)  # SSH fleet hosts and their facts, one line each

    def count(self, op: StepOp) -> int:
        return sum(1 for s in self.steps if s.op is op and s.custom)

    @property
    def has_changes(self) -> bool:
        return any(s.changes for s in self.steps)

    @property
    def destructive(self) -> bool:
        return any(s.op in (StepOp.DELETE, StepOp.REPLACE) for s in self.steps)


@dataclass
class StepResult:
    """A step as applied by `up` / `destroy`."""

    step: Step
    ok: bool
    error: str = ""
    seconds: float = 0.0


@dataclass
class ApplyResult:
    stack: str
    results: list[StepResult] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # secret values wrapped by the engine, masked by renderers

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)
