"""Rules that span documents: unique names, references that must exist, one default gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from yaml.nodes import Node

from gpustack_iac.errors import Diagnostic
from gpustack_iac.spec.diagnostics import format_path
from gpustack_iac.spec.models import (
    Document,
    FleetConfig,
    GatewayConfig,
    ProjectConfig,
    RouterConfig,
    ServiceConfig,
)
from gpustack_iac.spec.values import did_you_mean
from gpustack_iac.spec.yamlsource import find_node


@dataclass(frozen=True)
class Located:
    doc: Document
    file: str
    node: Node  # the document's root node, for locating problems

    def at(self, loc: Sequence[str | int], message: str) -> Diagnostic:
        point, path, _ = find_node(self.node, loc)
        return Diagnostic(self.file, point.start_mark.line + 1, point.start_mark.column + 1, format_path(path), message)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.node.start_mark.line + 1}"


def _names(items: list[Located], kind: type[Document], declared: dict[str, set[str]]) -> list[str]:
    valid = [str(i.doc.name) for i in items if isinstance(i.doc, kind)]  # type: ignore[attr-defined]  # every kind named here has a name
    return valid + sorted(declared.get(kind.KIND, set()) - set(valid))


def _unknown(what: str, name: str, known: list[str]) -> str:
    listed = ", ".join(sorted(known)) if known else "none"
    return f"{what} {name!r} is not defined in these files{did_you_mean(name, known)} (defined: {listed})"


def cross_check(items: list[Located], declared: dict[str, set[str]] | None = None) -> list[Diagnostic]:
    """Problems between documents. `declared` names documents that failed validation on their own,
    so that a reference to them is not reported a second time as missing."""
    declared = declared or {}
    out: list[Diagnostic] = []
    seen: dict[tuple[str, str], Located] = {}
    for item in items:
        key = (item.doc.KIND, str(item.doc.name))  # type: ignore[attr-defined]  # every document has a name
        if key in seen:
            out.append(item.at(["name"], f"{key[0]} name {key[1]!r} is already used at {seen[key].where}; names must be unique per kind"))
        else:
            seen[key] = item

    services = _names(items, ServiceConfig, declared)
    gateways = _names(items, GatewayConfig, declared)
    routers = _names(items, RouterConfig, declared)
    fleets = _names(items, FleetConfig, declared)

    defaults = [i for i in items if isinstance(i.doc, GatewayConfig) and i.doc.default]
    for extra in defaults[1:]:
        out.append(extra.at(["default"], f"only one gateway may be the default; {defaults[0].where} already is"))
    projects = [i for i in items if isinstance(i.doc, ProjectConfig)]
    for extra in projects[1:]:
        out.append(extra.at(["type"], f"only one project document is allowed; {projects[0].where} already is one"))

    aliases: dict[str, Located] = {}
    for item in items:
        doc = item.doc
        if isinstance(doc, ServiceConfig):
            if isinstance(doc.gateway, str) and doc.gateway not in gateways:
                out.append(item.at(["gateway"], _unknown("gateway", doc.gateway, gateways)))
            for i, fleet in enumerate(doc.fleets or []):
                if fleet not in fleets:
                    out.append(item.at(["fleets", i], _unknown("fleet", fleet, fleets)))
        if isinstance(doc, RouterConfig):
            for i, member in enumerate(doc.members):
                if member.service not in services:
                    out.append(item.at(["members", i, "service"], _unknown("service", member.service, services)))
            for i, fallback in enumerate(doc.fallbacks):
                if fallback not in services and fallback not in routers:
                    out.append(item.at(["fallbacks", i], _unknown("service or router", fallback, services + routers)))
                elif fallback == doc.name:
                    out.append(item.at(["fallbacks", i], "a router cannot fall back to itself"))
            if doc.gateway is not None and doc.gateway not in gateways:
                out.append(item.at(["gateway"], _unknown("gateway", doc.gateway, gateways)))
            if doc.model in aliases:
                out.append(item.at(["model"], f"model alias {doc.model!r} is already routed by {aliases[doc.model].where}"))
            else:
                aliases[doc.model] = item
    return out
