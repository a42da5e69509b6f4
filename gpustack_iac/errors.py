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


class PlanFileError(GpustackError):
    """A saved plan file could not be read or written (missing, corrupt, unsupported format)."""


class AgentApiError(RuntimeApiError):
    """An agent answered a request with an error status (carries the HTTP status and error code)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ReplicaSpecError(RuntimeApiError):
    """A replica specification sent to an agent is invalid or cannot be honoured on its host."""


class ScalingConfigError(GpustackError, ValueError):
    """Autoscaler inputs are inconsistent (a group's min above its max, a non-positive target, ...).

    A ValueError too: pydantic reports one raised while parsing a service definition at its path."""
