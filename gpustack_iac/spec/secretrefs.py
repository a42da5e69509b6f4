"""`${{ secrets.NAME }}` in `env` and `registry_auth`: dstack's references to the project's secrets.

A reference is replaced by the stack's run secret (`gpustack-iac secret set NAME`) as a
`RunSecret` value: an `EnvFromEnvironment`, so every layer that already keeps environment-taken
values secret (encrypted in state, `[secret]` and fingerprinted in plans, sent to the controller and
the agent only through their authenticated APIs, into the replica's environment only) keeps these
secret too. A name the stack does not have fails `plan`, naming it and where it is used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gpustack_iac.errors import ConfigError, Diagnostic
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import Document, FleetConfig, RegistryAuth, RunParams, ServiceConfig
from gpustack_iac.spec.values import EnvFromEnvironment

SECRET_REF = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class RunSecret(EnvFromEnvironment):
    """A value with at least one `${{ secrets.NAME }}` substituted: secret wherever it travels."""

    __slots__ = ()


@dataclass(frozen=True)
class _Slot:
    doc: Document
    path: tuple[str | int, ...]  # the property, e.g. ("replica_groups", 1, "env", "HF_TOKEN")
    env: dict[str, str | None] | None  # the env mapping that holds it, or None for registry_auth
    key: str  # the env key, or the registry_auth field


def references(text: str) -> list[str]:
    return SECRET_REF.findall(text)


def _slots(doc: Document) -> Iterator[_Slot]:
    envs: list[tuple[tuple[str | int, ...], dict[str, str | None]]] = []
    if isinstance(doc, (RunParams, FleetConfig)):
        envs.append((("env",), doc.env))
    if isinstance(doc, ServiceConfig) and doc.replica_groups:
        envs += [(("replica_groups", i, "env"), g.env) for i, g in enumerate(doc.replica_groups) if g.env]
    for prefix, env in envs:
        for key, value in env.items():
            if isinstance(value, str) and SECRET_REF.search(value):
                yield _Slot(doc, (*prefix, key), env, key)
    auth = doc.registry_auth if isinstance(doc, RunParams) else None
    if isinstance(auth, RegistryAuth):
        for field in ("username", "password"):
            if SECRET_REF.search(getattr(auth, field)):
                yield _Slot(doc, ("registry_auth", field), None, field)


def referenced_names(spec: Spec) -> set[str]:
    """Every secret name the configuration references."""
    out: set[str] = set()
    for doc in spec.documents():
        for slot in _slots(doc):
            out.update(references(_current(slot)))
    return out


def _current(slot: _Slot) -> str:
    if slot.env is not None:
        return str(slot.env[slot.key])
    return str(getattr(slot.doc.registry_auth, slot.key))  # type: ignore[attr-defined]


def resolve(spec: Spec, secrets: Mapping[str, str], stack: str) -> None:
    """Substitute every reference in place; raises ConfigError naming each unknown secret."""
    problems: list[Diagnostic] = []
    for doc in spec.documents():
        for slot in _slots(doc):
            text = _current(slot)
            missing = [n for n in references(text) if n not in secrets]
            if missing:
                problems += [_diag(slot, f"secret {n} is not set for stack {stack}; set it with "
                                         f"`gpustack-iac secret set {n}`") for n in dict.fromkeys(missing)]
                continue
            value = RunSecret(SECRET_REF.sub(lambda m: secrets[m.group(1)], text))
            if slot.env is not None:
                slot.env[slot.key] = value
            else:
                # RegistryAuth is a plain pydantic model: set the field without re-validating.
                object.__setattr__(slot.doc.registry_auth, slot.key, value)  # type: ignore[attr-defined]
    if problems:
        raise ConfigError(problems)


def _diag(slot: _Slot, message: str) -> Diagnostic:
    path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in slot.path).replace(".[", "[")
    source = slot.doc.source
    if source is None:
        return Diagnostic(file="<config>", line=0, column=0, path=path, message=message)
    line, column = source.locate(list(slot.path))
    return Diagnostic(file=source.file, line=line, column=column, path=path, message=message)
