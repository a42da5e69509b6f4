"""What every component needs to know about the stack being built."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def ephemeral_key() -> Callable[[], bytes]:
    """A key for a context with no stack behind it (a plan of a brand-new stack, tests): random, never stored."""
    key = secrets.token_bytes(32)
    return lambda: key


@dataclass(frozen=True)
class StackContext:
    project: str
    stack: str
    state_root: Path  # absolute; local processes keep their files under state_root/"local"/project/stack
    warnings: list[str] = field(default_factory=list, hash=False, compare=False)
    # The stack's key for fingerprints of secret-ish values, derived from its secrets key by the
    # command (stacks never import the engine). Called when first needed: `up` of a new stack
    # creates the secrets key only then, under the stack's lock.
    fingerprint_key: Callable[[], bytes] = field(default_factory=ephemeral_key, hash=False, compare=False)

    def local_dir(self, *parts: str) -> Path:
        return self.state_root / "local" / self.project / self.stack / Path(*parts)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def fingerprint_values(self, values: dict[str, str]) -> dict[str, str]:
        """Values replaced by keyed hashes: a plan can say "env changed" while a component's state
        (which Pulumi does not encrypt unless asked) never holds a token in plaintext, nor a hash
        of one that could be checked against guesses offline (an unkeyed sha256 of `HF_TOKEN=hf_...`
        or of a short password can be)."""
        key = self.fingerprint_key()
        return {k: fingerprint(key, str(v)) for k, v in values.items()}


def hide_registry_password(container: dict[str, Any] | None, hide: Callable[[str], Any]) -> None:
    """Replace a definition's `registry_auth` password in place: by a secret output for the
    registration's inputs (encrypted in state), by a fingerprint for the component's recorded spec."""
    auth = (container or {}).get("registry_auth")
    if auth and auth.get("password") is not None:
        auth["password"] = hide(str(auth["password"]))


def fingerprint(key: bytes, value: str) -> str:
    return "hmac-sha256:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
