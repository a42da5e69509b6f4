"""Loading configuration files into a validated, normalised `Spec`.

One file, several, or a directory; multi-document YAML. Every problem of a run is collected and
raised together as one `ConfigError`, each located by file, line, column and property path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from gpustack_iac.errors import ConfigError, Diagnostic
from gpustack_iac.spec.checks import Located, cross_check
from gpustack_iac.spec.diagnostics import from_validation_error
from gpustack_iac.spec.models import (
    DOCUMENT_MODELS,
    DevEnvironmentConfig,
    Document,
    FleetConfig,
    GatewayConfig,
    ProjectConfig,
    RouterConfig,
    ServiceConfig,
    Source,
    TaskConfig,
    VolumeConfig,
)
from gpustack_iac.spec.values import NAME_RE, did_you_mean
from gpustack_iac.spec.yamlsource import MAX_FILE_BYTES, find_node, position_of, read_documents, too_large_message

CONFIG_SUFFIXES: tuple[str, ...] = (".gpustack.yml", ".gpustack.yaml", ".dstack.yml", ".dstack.yaml")
_SKIP_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache", ".pytest_cache"})


@dataclass
class Spec:
    """Every validated document of a run, by kind. Each document knows its source file (`doc.source`)."""

    fleets: list[FleetConfig] = field(default_factory=list)
    gateways: list[GatewayConfig] = field(default_factory=list)
    services: list[ServiceConfig] = field(default_factory=list)
    routers: list[RouterConfig] = field(default_factory=list)
    tasks: list[TaskConfig] = field(default_factory=list)
    dev_environments: list[DevEnvironmentConfig] = field(default_factory=list)
    volumes: list[VolumeConfig] = field(default_factory=list)
    project: ProjectConfig | None = None
    files: list[Path] = field(default_factory=list)

    def documents(self) -> list[Document]:
        """Every document, in a stable order: project, fleets, volumes, gateways, services, routers, tasks, dev environments."""
        head: list[Document] = [self.project] if self.project else []
        return [
            *head,
            *self.fleets,
            *self.volumes,
            *self.gateways,
            *self.services,
            *self.routers,
            *self.tasks,
            *self.dev_environments,
        ]

    @property
    def default_gateway(self) -> GatewayConfig | None:
        return next((g for g in self.gateways if g.default), None)

    def gateway_for(self, service: ServiceConfig) -> GatewayConfig | None:
        """The gateway a service runs behind: its named one, the default one, or none."""
        if service.gateway is False:
            return None
        if isinstance(service.gateway, str):
            return next((g for g in self.gateways if g.name == service.gateway), None)
        return self.default_gateway

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    def fingerprint(self) -> str:
        """A stable sha256 of the normalised configuration (independent of file names and order)."""
        body: dict[str, Any] = {}
        for doc in self.documents():
            body.setdefault(doc.KIND, []).append(doc.model_dump(mode="json"))
        for docs in body.values():
            docs.sort(key=lambda d: str(d.get("name")))
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _add(self, doc: Document) -> None:
        if isinstance(doc, ProjectConfig):
            self.project = doc
            return
        bucket = {
            FleetConfig: self.fleets,
            GatewayConfig: self.gateways,
            ServiceConfig: self.services,
            RouterConfig: self.routers,
            TaskConfig: self.tasks,
            DevEnvironmentConfig: self.dev_environments,
            VolumeConfig: self.volumes,
        }[type(doc)]
        bucket.append(doc)  # type: ignore[attr-defined]


def is_config_file(path: Path) -> bool:
    name = path.name
    return name.endswith(CONFIG_SUFFIXES) or name in {".gpustack.yml", ".gpustack.yaml", ".dstack.yml", ".dstack.yaml"}


def discover(paths: Iterable[Path], recursive: bool = True) -> tuple[list[Path], list[Diagnostic]]:
    """The configuration files named or found under the given paths, sorted per directory: in each
    directory given, or (`recursive`) also in its subdirectories."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for path in paths:
        if path.is_dir():
            found = _configs_in(path, recursive)
            if not found:
                deeper = "" if recursive or not _configs_in(path, True) else "; subdirectories have some: pass --recursive to read them"
                problems.append(
                    Diagnostic(str(path), 0, 0, "", f"no configuration files here (expected *{', *'.join(CONFIG_SUFFIXES)}){deeper}")
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Diagnostic(str(path), 0, 0, "", "no such file or directory"))
    unique: dict[Path, None] = {}
    for f in files:
        unique.setdefault(f.resolve(), None)
    return [Path(os.path.relpath(f)) if _under_cwd(f) else f for f in unique], problems


def _configs_in(path: Path, recursive: bool) -> list[Path]:
    found: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS) if recursive else []
        found.extend(Path(root) / n for n in sorted(names) if is_config_file(Path(n)))
    return found


def _under_cwd(path: Path) -> bool:
    try:
        path.relative_to(Path.cwd())
    except ValueError:
        return False
    return True


def _default_name(file: str, kind: str, index: int, unnamed_before: int) -> str:
    """A name from the file: `serve.dstack.yml` -> `serve`; `.dstack.yml` -> its directory's name."""
    base = os.path.basename(file)
    for suffix in CONFIG_SUFFIXES + (".yml", ".yaml"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if not base:
        base = os.path.basename(os.path.dirname(os.path.abspath(file))) or kind
    name = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or kind
    if not name[0].isalpha():
        name = f"{kind}-{name}"
    if unnamed_before:
        name = f"{name}-{index}"
    return name[:41].rstrip("-")


def _load_document(
    data: Any, node: Any, file: str, index: int, env: Mapping[str, str], unnamed: dict[str, int]
) -> tuple[Document | None, list[Diagnostic]]:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if not isinstance(data, dict):
        return None, [Diagnostic(file, line, col, "", f"expected a mapping with a type property, got {type(data).__name__}")]
    kind = data.get("type")
    if kind is None:
        return None, [Diagnostic(file, line, col, "type", f"missing required property 'type' (expected one of: {', '.join(DOCUMENT_MODELS)})")]
    model = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        point, _, _ = find_node(node, ["type"])
        hint = did_you_mean(str(kind), DOCUMENT_MODELS)
        return None, [
            Diagnostic(
                file,
                point.start_mark.line + 1,
                point.start_mark.column + 1,
                "type",
                f"unknown type {kind!r}{hint} (expected one of: {', '.join(DOCUMENT_MODELS)})",
            )
        ]
    try:
        doc = model.model_validate(data, context={"env": env})
    except ValidationError as exc:
        return None, _all_problems(exc, model, data, file, node, env)
    if getattr(doc, "name", None) is None:
        count = unnamed.get(kind, 0)
        unnamed[kind] = count + 1
        doc.name = _default_name(file, kind, index, count)  # type: ignore[attr-defined]
        assert NAME_RE.match(doc.name)  # type: ignore[attr-defined]
    doc.attach_source(Source(file, line, index, node))
    return doc, []


def _all_problems(
    exc: ValidationError, model: type[Document], data: dict[str, Any], file: str, node: Any, env: Mapping[str, str]
) -> list[Diagnostic]:
    """Every problem of a document in one run: pydantic skips a model's own rules (replicas vs
    replica_groups, commands or image, ...) once a field fails, so the document is validated again
    without the failing properties and what that finds beyond them is added."""
    problems = from_validation_error(exc, model, file, node)
    failed = {err["loc"][0] for err in exc.errors() if err["loc"]}
    pruned = {k: v for k, v in data.items() if k not in failed}
    if not failed or len(pruned) == len(data):
        return problems
    try:
        model.model_validate(pruned, context={"env": env})
    except ValidationError as again:
        seen = {(p.line, p.column, p.message) for p in problems}
        for problem in from_validation_error(again, model, file, node):
            head = problem.path.split(".")[0].split("[")[0]
            if head not in failed and (problem.line, problem.column, problem.message) not in seen:
                problems.append(problem)
    return problems


def load_text(text: str, file: str = "<string>", env: Mapping[str, str] | None = None) -> Spec:
    """Load configuration from a string (one file's worth); raises ConfigError with every problem."""
    return _load([(file, text)], env if env is not None else {}, [])


def load_paths(paths: list[Path], env: Mapping[str, str], recursive: bool = True) -> Spec:
    """Load files and directories (`recursive`: with their subdirectories); raises ConfigError with
    every problem found, all at once."""
    files, problems = discover(paths, recursive)
    sources: list[tuple[str, str]] = []
    for f in files:
        try:
            sources.append((str(f), _read_bounded(f)))
        except _TooLarge as exc:
            problems.append(Diagnostic(str(f), exc.line, exc.column, "", too_large_message()))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Diagnostic(str(f), 0, 0, "", f"cannot read file: {exc}"))
    spec = _load(sources, env, problems)
    spec.files = files
    return spec


class _TooLarge(Exception):
    def __init__(self, line: int, column: int) -> None:
        self.line, self.column = line, column


def _read_bounded(path: Path) -> str:
    """The file's text, reading at most one byte past the size limit (never a whole huge file)."""
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        head = data[:MAX_FILE_BYTES].decode("utf-8", errors="replace")
        raise _TooLarge(*position_of(head, len(head)))
    return data.decode("utf-8")


def _load(sources: list[tuple[str, str]], env: Mapping[str, str], problems: list[Diagnostic]) -> Spec:
    diagnostics = list(problems)
    located: list[Located] = []
    declared: dict[str, set[str]] = {}
    for file, text in sources:
        docs, yaml_problems = read_documents(text)
        diagnostics.extend(Diagnostic(file, p.line, p.column, p.path, p.message) for p in yaml_problems)
        if not docs and not yaml_problems:
            diagnostics.append(Diagnostic(file, 1, 1, "", "the file declares nothing (expected at least one document "
                                                          f"with a type: {', '.join(DOCUMENT_MODELS)})"))
        unnamed: dict[str, int] = {}
        for ydoc in docs:
            doc, diags = _load_document(ydoc.data, ydoc.node, file, ydoc.index, env, unnamed)
            diagnostics.extend(diags)
            if doc is None and isinstance(ydoc.data, dict) and isinstance(ydoc.data.get("name"), str):
                declared.setdefault(str(ydoc.data.get("type")), set()).add(ydoc.data["name"])
            if doc is not None:
                located.append(Located(doc, file, ydoc.node))
    diagnostics.extend(cross_check(located, declared))
    if diagnostics:
        raise ConfigError(diagnostics=diagnostics)
    spec = Spec()
    for item in located:
        spec._add(item.doc)
    return spec
