"""Small typed values shared by the configuration models: names, durations, backends, env."""

from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any, Iterable

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from gpustack_iac.spec.yamlsource import Yaml11Bool

# The dstack backends, plus `local` (agents on this machine) and `ssh` (SSH fleets).
BACKENDS: tuple[str, ...] = (
    "local",
    "ssh",
    "aws",
    "gcp",
    "azure",
    "kubernetes",
    "lambda",
    "nebius",
    "vultr",
    "cudo",
    "oci",
    "datacrunch",
    "amddevcloud",
    "digitalocean",
    "hotaisle",
    "cloudrift",
    "runpod",
    "vastai",
    "tensordock",
    "remote",
    # Newer dstack backends: they validate (a dstack file names them) and `plan` refuses them by name.
    "crusoe",
    "verda",
    "massedcompute",
    "slurm",
    "jarvislabs",
    "gcp-tpu",
)

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# The largest whole number any property takes: counts, ports and sizes all fit in 32 bits, and a
# bigger number is a typo (or a probe) that would otherwise travel as a float through JSON.
MAX_INT = 2**31 - 1
_INT_STR_RE = re.compile(r"^\s*[-+]?[0-9]+\s*$")


def _yaml11_hint(value: Yaml11Bool, advice: str) -> str:
    return f"{str(value)!r} (YAML 1.1's spelling of a boolean; this tool reads YAML 1.2, where it is a string: {advice})"


def check_int(value: Any) -> Any:
    """Before pydantic's own int check: refuse booleans, YAML 1.1 booleans, fractions and huge numbers."""
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got the boolean {str(value).lower()}")
    if isinstance(value, Yaml11Bool):
        raise ValueError(f"expected a whole number, got {_yaml11_hint(value, 'write a number')}")
    if isinstance(value, str) and _INT_STR_RE.match(value):
        value = int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        value = int(value)
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        raise ValueError(f"expected a whole number between {-MAX_INT} and {MAX_INT}, got {value}")
    return value


def check_number(value: Any) -> Any:
    """Before pydantic's own float check: refuse booleans, YAML 1.1 booleans, infinities and NaN."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    if isinstance(value, Yaml11Bool):
        raise ValueError(f"expected a number, got {_yaml11_hint(value, 'write a number')}")
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        raise ValueError(f"expected a number between {-MAX_INT} and {MAX_INT}, got {value}")
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_INT):
        raise ValueError(f"expected a number between {-MAX_INT} and {MAX_INT}, got {value!r}")
    return value


def parse_bool(value: Any) -> bool:
    """Only YAML's true and false: no 1, no "yes", no YAML 1.1 `on`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Yaml11Bool):
        raise ValueError(f"expected true or false, got {_yaml11_hint(value, 'write true or false')}")
    raise ValueError(f"expected true or false, got {value!r}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def parse_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(
            f"expected a name of lowercase letters, digits and dashes starting with a letter (at most 41), got {value!r}"
        )
    return value


def parse_backend(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a backend name such as aws or local, got {value!r}")
    if value not in BACKENDS:
        raise PydanticCustomError(
            "unknown_backend",
            "{msg}",
            {"msg": f"unknown backend {value!r}{did_you_mean(value, BACKENDS)} (expected one of: {', '.join(BACKENDS)})"},
        )
    return value


def parse_duration(value: Any) -> int | None:
    """Seconds from `90`, `90s`, `5m`, `2h`, `1d`, `1w`; `off`/false/null mean no limit (None)."""
    if value is None or value is False or value == "off":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30m, 2h or 1d, or off")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value}")
        return value
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        if value.strip().isdigit():
            return int(value.strip())
    raise ValueError(f"expected a duration like 90s, 30m, 2h or 1d (or off), got {value!r}")


def format_duration(seconds: int | None) -> str:
    if seconds is None:
        return "off"
    for unit in ("w", "d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_env(value: Any) -> dict[str, str | None]:
    """`env` as a list (`- KEY=value`, `- KEY`) or a mapping; a missing value is None (resolved later)."""
    if value is None:
        return {}
    out: dict[str, str | None] = {}
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = []
        for entry in value:
            if not isinstance(entry, str):
                raise ValueError(f"expected KEY=value or KEY in an env list, got {entry!r}")
            key, sep, val = entry.partition("=")
            items.append((key, val if sep else None))
    else:
        raise ValueError("expected a list of KEY=value (or KEY) entries, or a mapping")
    for key, val in items:
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValueError(f"expected an environment variable name, got {key!r}")
        if isinstance(val, bool):
            val = "true" if val else "false"
        elif val is not None and not isinstance(val, (str, int, float)):
            raise ValueError(f"expected a string value for {key}, got {val!r}")
        out[key] = None if val is None else str(val)
    return out


class EnvFromEnvironment(str):
    """An env value taken from the planning environment (`- HF_TOKEN` without a value): a secret.

    A str, so it flows through the models and definitions unchanged; the stack components wrap
    exactly these values as Pulumi secrets, while literal values stay visible in plans."""

    __slots__ = ()


def resolve_env(env: dict[str, str | None], source: Any) -> dict[str, str | None]:
    """Fill entries without a value from `source` (the planning environment), when one is given."""
    if source is None:
        return env
    out: dict[str, str | None] = {}
    for key, val in env.items():
        if val is None:
            if key not in source:
                raise PydanticCustomError(
                    "env_missing",
                    "{msg}",
                    {
                        "msg": f"environment variable {key} has no value here and is not set in the environment; "
                        f"export {key}=... before running, or write {key}=value",
                        "item": key,
                    },
                )
            val = EnvFromEnvironment(source[key])
        out[key] = val
    return out


def _listify(value: Any) -> Any:
    """Allow a single string where a list of strings is expected (`commands: python app.py`)."""
    return [value] if isinstance(value, str) else value


Name = Annotated[str, PlainValidator(parse_name), WithJsonSchema({"type": "string", "pattern": NAME_RE.pattern})]
Backend = Annotated[str, PlainValidator(parse_backend), WithJsonSchema({"enum": list(BACKENDS)})]
Duration = Annotated[
    int | None,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^(\d+[smhdw]?|off)$"}, {"const": False}]}),
]
StrList = Annotated[list[str], BeforeValidator(_listify)]
Int = Annotated[int, BeforeValidator(check_int)]
Number = Annotated[float, BeforeValidator(check_number)]
Bool = Annotated[bool, PlainValidator(parse_bool), WithJsonSchema({"type": "boolean"})]
