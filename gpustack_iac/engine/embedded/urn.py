"""Pulumi URNs: `urn:pulumi:<stack>::<project>::<qualified type>::<name>`."""

from __future__ import annotations

from dataclasses import dataclass

STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class Urn:
    stack: str
    project: str
    qualified_type: str  # parent type chain joined by "$", the resource's own type last
    name: str

    @property
    def type(self) -> str:
        return self.qualified_type.split("$")[-1]

    def __str__(self) -> str:
        return f"urn:pulumi:{self.stack}::{self.project}::{self.qualified_type}::{self.name}"


def make_urn(stack: str, project: str, type_: str, name: str, parent: str = "") -> str:
    """The URN Pulumi gives a resource; a parent's type chain prefixes the type, except the Stack's."""
    qualified = type_
    if parent:
        parent_qualified = parse_urn(parent).qualified_type
        parent_type = parent_qualified.split("$")[-1]
        # Pulumi leaves the root Stack out of the chain, so top-level resources keep a bare type.
        if parent_type != STACK_TYPE:
            qualified = f"{parent_qualified}${type_}"
    return str(Urn(stack, project, qualified, name))


def parse_urn(urn: str) -> Urn:
    prefix = "urn:pulumi:"
    if not urn.startswith(prefix):
        raise ValueError(f"not a Pulumi URN: {urn!r}")
    parts = urn[len(prefix) :].split("::", 3)
    if len(parts) != 4:
        raise ValueError(f"not a Pulumi URN: {urn!r}")
    return Urn(parts[0], parts[1], parts[2], parts[3])
