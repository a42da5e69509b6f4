"""Pulumi's wire markers and the helpers over them, in one place that imports nothing.

The SDK marks a secret property as {SECRET_SIG_KEY: SECRET_SIG, "value": plain} (on disk
"ciphertext" instead of "value") and a value not known before apply as the UNKNOWN string.
The state, the embedded engine's diffs, the Automation API translation, the renderers and the
commands that read outputs all use these; none of them needs the SDK for it.
"""

from __future__ import annotations

from typing import Any

SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def is_secret(value: Any) -> bool:
    """True for a value wrapped in the secret signature (in memory or encrypted)."""
    return isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG


def wrap_secret(value: Any) -> dict[str, Any]:
    """`value` wrapped as an in-memory secret (a secret stays as it is)."""
    return value if is_secret(value) else {SECRET_SIG_KEY: SECRET_SIG, "value": value}


def unwrap_secret(value: Any) -> Any:
    """The plain value inside the secret signature; any other value as it is."""
    return value.get("value") if is_secret(value) else value


# These run on every property of every resource of a plan: containers are rare, so they look at a
# value's exact type first and only recurse into dicts and lists.


def contains_secret(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            return True
        for v in value.values():
            if isinstance(v, (dict, list)) and contains_secret(v):
                return True
        return False
    if isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)) and contains_secret(v):
                return True
    return False


def contains_unknown(value: Any) -> bool:
    if isinstance(value, str):
        return value == UNKNOWN
    if isinstance(value, dict):
        for v in value.values():
            if contains_unknown(v):
                return True
        return False
    if isinstance(value, list):
        for v in value:
            if contains_unknown(v):
                return True
        return False
    return bool(value == UNKNOWN)
