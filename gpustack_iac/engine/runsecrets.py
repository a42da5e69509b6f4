"""Run secrets (`gpustack-iac secret set NAME`): values a configuration names as `${{ secrets.NAME }}`.

Kept per stack, in one file beside the stack's checkpoint (`<stack>.run-secrets.json`, mode 0600),
each value encrypted with the stack's own secrets key (the passphrase manager's AES-256-GCM, the
same key that encrypts the checkpoint's secrets), so the state location never holds one in the clear.
Names are stored in the clear: `secret list` and `plan` need them without the passphrase.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gpustack_iac.engine.atomic import atomic_write
from gpustack_iac.engine.state import StateStore
from gpustack_iac.errors import StateError

SECRET_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_FORMAT = 1


class RunSecrets:
    """The run secrets of one stack."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.path: Path = store.dir / f"{store.stack}.run-secrets.json"

    def names(self) -> list[str]:
        return sorted(self._read())

    def values(self) -> dict[str, str]:
        """Every secret, decrypted (needs the stack's passphrase when there is at least one)."""
        stored = self._read()
        if not stored:
            return {}
        crypter = self._store.secrets_crypter()
        return {name: crypter.decrypt(value) for name, value in stored.items()}

    def set(self, name: str, value: str) -> bool:
        """Store `value` under `name`; True when the name is new. Takes the stack's lock."""
        check_name(name)
        with self._store.lock("secret"):
            stored = self._read()
            created = name not in stored
            stored[name] = self._store.secrets_crypter().encrypt(value)
            self._write(stored)
        return created

    def delete(self, name: str) -> bool:
        """Remove `name`; False when there was no such secret."""
        with self._store.lock("secret"):
            stored = self._read()
            if stored.pop(name, None) is None:
                return False
            self._write(stored)
        return True

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the stack's secrets file {self.path}: {exc}") from exc
        secrets = data.get("secrets") if isinstance(data, dict) else None
        if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
            raise StateError(f"the stack's secrets file {self.path} is damaged (expected {{\"secrets\": {{NAME: ciphertext}}}})")
        return dict(secrets)

    def _write(self, stored: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"format": _FORMAT, "secrets": dict(sorted(stored.items()))}, indent=1) + "\n"
        atomic_write(self.path, body.encode(), mode=0o600)


def check_name(name: str) -> None:
    if not SECRET_NAME_RE.match(name):
        raise StateError(f"expected a secret name of letters, digits and underscores (not starting with a digit), got {name!r}")
