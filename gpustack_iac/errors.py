"""Typed exceptions. The CLI is the one place that turns them into messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field


class GpustackError(Exception):
    """Base of every error the tool reports to a user (never a traceback)."""

    exit_code: int = 1


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a configuration file, located precisely."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    path: str  # property path, e.g. "replica_groups[1].resources.gpu"
    message: str  # what is wrong and what was expected

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        prop = f" {self.path}:" if self.path else ""
        return f"{where}:{prop} {self.message}"


@dataclass
class ConfigError(GpustackError):
    """Every problem found while loading a set of files, reported together."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)


class EngineError(GpustackError):
    """An engine could not plan or apply (provider failure, missing CLI, ...)."""


class StateError(GpustackError):
    """The state could not be read, written or decrypted."""


class StateLockedError(StateError):
    """Another process holds the stack's lock."""

    exit_code = 3


class PlanStaleError(GpustackError):
    """A saved plan no longer matches the configuration or the state."""


class RuntimeApiError(GpustackError):
    """An agent, gateway or controller API call failed."""
