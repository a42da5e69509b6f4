"""What every component needs to know about the stack being built."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StackContext:
    project: str
    stack: str
    state_root: Path  # absolute; local processes keep their files under state_root/"local"/project/stack
    warnings: list[str] = field(default_factory=list, hash=False, compare=False)

    def local_dir(self, *parts: str) -> Path:
        return self.state_root / "local" / self.project / self.stack / Path(*parts)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


def fingerprint_values(values: dict[str, str]) -> dict[str, str]:
    """Values replaced by short hashes: a plan can say "env changed" while a component's state
    (which Pulumi does not encrypt unless asked) never holds a token in plaintext."""
    return {k: "sha256:" + hashlib.sha256(str(v).encode()).hexdigest()[:12] for k, v in values.items()}
