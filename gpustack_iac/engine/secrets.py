"""Pulumi's passphrase secrets manager, wire-compatible so `pulumi stack import` can read our state.

Format (pulumi/pulumi pkg/secrets/passphrase and sdk/go/common/resource/config/crypt.go):
- key = PBKDF2-HMAC-SHA256(passphrase, salt, 1_000_000 iterations, 32 bytes)
- a value = "v1:" + b64(12-byte nonce) + ":" + b64(AES-256-GCM ciphertext with tag)
- the secrets-manager state = {"salt": "v1:" + b64(8-byte salt) + ":" + <the value "pulumi" encrypted>}
  so a wrong passphrase is detected before anything is decrypted.
- a secret property on disk = {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": <the value's JSON, encrypted>};
  in memory we keep {SECRET_SIG_KEY: SECRET_SIG, "value": plain}, the shape the Pulumi SDK serialises.
- a secret inside a secret (pkg/resource/stack/deployment.go, SerializePropertyValue) is serialised
  with the no-op encrypter: it keeps its signature, so it is still a secret when read back, and its
  "ciphertext" is its value's JSON in the clear, since the outer encryption already covers it.
  Reading decrypts only the outermost secret and reads inner ones with the no-op decrypter.
- `pulumi stack export --show-secrets` writes {SECRET_SIG_KEY: SECRET_SIG, "plaintext": <JSON>}; it
  is read like a decrypted ciphertext.
- the JSON is Go's encoding/json: keys sorted, no spaces, `<`, `>` and `&` escaped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gpustack_iac.engine.wire import SECRET_SIG, SECRET_SIG_KEY, is_secret
from gpustack_iac.errors import StateError

log = logging.getLogger(__name__)

SECRETS_PROVIDER_TYPE = "passphrase"
PBKDF2_ITERATIONS = 1_000_000
KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 8
KNOWN_PLAINTEXT = "pulumi"
PASSPHRASE_ENV_VARS = ("GPUSTACK_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE")
FINGERPRINT_PURPOSE = "gpustack-iac/fingerprint/v1"


class Crypter:
    """AES-256-GCM with a key derived once (PBKDF2 is deliberately slow)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise StateError("internal error: the secrets key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    def derive_key(self, purpose: str) -> bytes:
        """A separate key for `purpose` (HMAC-SHA256 of the label under the secrets key): never the AES key itself."""
        return hmac.new(self._key, purpose.encode("utf-8"), hashlib.sha256).digest()

    @classmethod
    def from_passphrase(cls, passphrase: str, salt: bytes) -> Crypter:
        key = hashlib.pbkdf2_hmac("sha256", passphrase.encode("utf-8"), salt, PBKDF2_ITERATIONS, KEY_BYTES)
        return cls(key)

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"v1:{base64.b64encode(nonce).decode()}:{base64.b64encode(sealed).decode()}"

    def decrypt(self, value: str) -> str:
        parts = value.split(":")
        if len(parts) != 3 or parts[0] != "v1":
            raise StateError("a secret in the state is malformed (expected v1:<nonce>:<ciphertext>)")
        try:
            nonce = base64.b64decode(parts[1], validate=True)
            sealed = base64.b64decode(parts[2], validate=True)
            return self._aead.decrypt(nonce, sealed, None).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise StateError("a secret in the state is malformed (bad base64)") from exc
        except InvalidTag as exc:
            raise StateError("a secret in the state cannot be decrypted with this passphrase") from exc


def new_salt_state(passphrase: str) -> tuple[str, Crypter]:
    """A fresh secrets-manager state (the `salt` string) and its crypter."""
    salt = os.urandom(SALT_BYTES)
    crypter = Crypter.from_passphrase(passphrase, salt)
    state = f"v1:{base64.b64encode(salt).decode()}:{crypter.encrypt(KNOWN_PLAINTEXT)}"
    return state, crypter


def crypter_from_salt_state(passphrase: str, state: str, *, stack: str = "") -> Crypter:
    """Check the passphrase against the state's known plaintext and return the crypter."""
    parts = state.split(":", 2)
    if len(parts) != 3 or parts[0] != "v1":
        raise StateError(f"the secrets provider state of stack '{stack}' is malformed")
    try:
        salt = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StateError(f"the secrets provider salt of stack '{stack}' is malformed") from exc
    crypter = Crypter.from_passphrase(passphrase, salt)
    try:
        ok = crypter.decrypt(parts[2]) == KNOWN_PLAINTEXT
    except StateError:
        ok = False
    if not ok:
        raise StateError(
            f"incorrect passphrase for stack '{stack}': set GPUSTACK_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE) "
            "to the passphrase this stack was created with"
        )
    return crypter


def has_plain_secrets(tree: Any) -> bool:
    """True when an in-memory tree holds a secret that needs encrypting."""
    if is_secret(tree):
        return "value" in tree
    if isinstance(tree, dict):
        return any(has_plain_secrets(v) for v in tree.values())
    if isinstance(tree, list):
        return any(has_plain_secrets(v) for v in tree)
    return False


def has_encrypted_secrets(tree: Any) -> bool:
    """True when a stored tree holds a secret still in its on-disk form (ciphertext or plaintext)."""
    if is_secret(tree):
        return "ciphertext" in tree or "plaintext" in tree
    if isinstance(tree, dict):
        return any(has_encrypted_secrets(v) for v in tree.values())
    if isinstance(tree, list):
        return any(has_encrypted_secrets(v) for v in tree)
    return False


def go_json(value: Any) -> str:
    """`value` as Go's json.Marshal writes it, so our ciphertexts hold the bytes Pulumi's would."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go escapes these for HTML safety; they can only occur inside strings, so replacing is exact.
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def encrypt_tree(tree: Any, crypter: Crypter | None) -> Any:
    """Copy of `tree` with every in-memory secret replaced by its on-disk form.

    `crypter` None is Pulumi's no-op encrypter, used below a secret: the outer encryption covers it.
    """
    if is_secret(tree):
        if "ciphertext" in tree:
            return dict(tree)
        # Pulumi encrypts the JSON of the inner value, so any JSON type round-trips.
        plaintext = go_json(encrypt_tree(tree.get("value"), None))
        return {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": crypter.encrypt(plaintext) if crypter else plaintext}
    if isinstance(tree, dict):
        return {k: encrypt_tree(v, crypter) for k, v in tree.items()}
    if isinstance(tree, list):
        return [encrypt_tree(v, crypter) for v in tree]
    return tree


def decrypt_tree(tree: Any, crypter: Crypter, *, _outer: bool = True) -> Any:
    """Copy of `tree` with every on-disk secret replaced by its in-memory plain form."""
    if is_secret(tree):
        if "plaintext" in tree and "ciphertext" not in tree:
            plaintext = tree["plaintext"]
        elif "ciphertext" in tree and "plaintext" not in tree:
            plaintext = tree["ciphertext"]
            if _outer:
                plaintext = crypter.decrypt(str(plaintext))
            elif not _is_json(plaintext) and str(plaintext).startswith("v1:"):
                # Written before nested secrets followed Pulumi: encrypted with the stack's key.
                plaintext = crypter.decrypt(str(plaintext))
        else:
            raise StateError("a secret in the state is malformed: it needs one of ciphertext or plaintext")
        if not isinstance(plaintext, str):
            raise StateError("a secret in the state is malformed: its ciphertext is not a string")
        try:
            inner = json.loads(plaintext)
        except json.JSONDecodeError as exc:
            raise StateError("a decrypted secret in the state is not valid JSON") from exc
        return {SECRET_SIG_KEY: SECRET_SIG, "value": decrypt_tree(inner, crypter, _outer=False)}
    if isinstance(tree, dict):
        return {k: decrypt_tree(v, crypter, _outer=_outer) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decrypt_tree(v, crypter, _outer=_outer) for v in tree]
    return tree


def _is_json(text: Any) -> bool:
    try:
        json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return False
    return True


@dataclass(frozen=True)
class Passphrase:
    value: str
    source: str  # "argument", an environment variable name, or the passphrase file path


def passphrase_file(root: Path, stack: str) -> Path:
    return root / ".pulumi" / f"passphrase-{stack}"


def find_passphrase(explicit: str | None, root: Path, stack: str) -> Passphrase | None:
    """The passphrase in priority order: argument, environment, then a generated local file."""
    if explicit is not None:
        return Passphrase(explicit, "argument")
    for name in PASSPHRASE_ENV_VARS:
        value = os.environ.get(name)
        if value is not None:
            return Passphrase(value, name)
    path = passphrase_file(root, stack)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise StateError(
            f"the passphrase file {path} is damaged (not UTF-8 text): restore it from your backup, or set "
            "GPUSTACK_PASSPHRASE to the stack's passphrase"
        ) from None
    return Passphrase(text, str(path)) if text else None


def create_passphrase_file(root: Path, stack: str) -> Passphrase:
    """Generate a random passphrase for a brand-new local stack, readable by the owner only."""
    path = passphrase_file(root, stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = pysecrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first: use theirs so both agree on the key.
        found = find_passphrase(None, root, stack)
        if found is None:
            raise StateError(f"the passphrase file {path} exists but is empty") from None
        return found
    try:
        os.write(fd, (value + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning(
        "created a random passphrase for stack '%s' in %s (mode 0600); keep that file, "
        "or set GPUSTACK_PASSPHRASE before the first `up` to choose your own",
        stack,
        path,
    )
    return Passphrase(value, str(path))
