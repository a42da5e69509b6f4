"""Where a command's stack lives: project and stack names, the state location, the engine.

Commands that take configuration paths (`plan`, `up`) name the project from the configuration;
commands that do not (`destroy`, `output`, `state`, `status`, `logs`) find the one stack in the
state directory, or are told which with `--project` / `--stack`.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from gpustack_iac.engine.base import Engine, EngineKind
from gpustack_iac.engine.factory import select_engine
from gpustack_iac.engine.runsecrets import RunSecrets
from gpustack_iac.engine.state import StateStore
from gpustack_iac.errors import GpustackError
from gpustack_iac.spec.loader import Spec

DEFAULT_STACK = "dev"
STATE_DIR_ENV = "GPUSTACK_STATE_DIR"


class WorkspaceError(GpustackError):
    """The stack to work on cannot be determined."""


class NoStackError(WorkspaceError):
    """The state directory holds no stack (nothing was ever deployed there, or it was removed)."""


@dataclass(frozen=True)
class Workspace:
    project: str
    stack: str
    state_url: str  # file:///abs/path/.gpustack/state, or a cloud URL
    engine_kind: EngineKind = "auto"

    @property
    def state_root(self) -> Path:
        """The local directory under which this stack keeps process files (`.gpustack/`)."""
        if self.state_url.startswith("file://"):
            return Path(self.state_url[len("file://"):]).parent
        return default_state_dir().parent

    def engine(self) -> Engine:
        return self._engine

    def store(self) -> StateStore:
        return self._store

    def run_secrets(self) -> RunSecrets:
        """The stack's `${{ secrets.NAME }}` values (`gpustack-iac secret`), kept beside its checkpoint."""
        if not self.state_url.startswith("file://"):
            raise WorkspaceError(f"run secrets are kept in a file:// state location for now; {self.state_url} is not one")
        return RunSecrets(self._store)

    def fingerprint_key(self) -> bytes:
        """The stack's fingerprint key (StateStore.fingerprint_key); a random one where the state is not a local directory."""
        if self.state_url.startswith("file://"):
            return self._store.fingerprint_key()
        return self._ephemeral_key

    @cached_property
    def _ephemeral_key(self) -> bytes:
        return secrets.token_bytes(32)

    # One store and one engine per command: each StateStore derives the passphrase key (PBKDF2, about
    # 0.3 s) the first time it touches a secret, so a plan that also reads the state must not open a second.
    @cached_property
    def _store(self) -> StateStore:
        return StateStore.from_url(self.state_url, self.project, self.stack, None)

    @cached_property
    def _engine(self) -> Engine:
        store = self._store if self.state_url.startswith("file://") else None
        return select_engine(self.engine_kind, project=self.project, stack=self.stack, state_url=self.state_url, store=store)


def default_state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else (Path.cwd() / ".gpustack" / "state").resolve()


def _state_url(spec: Spec | None, state_dir: Path | None) -> str:
    if state_dir is not None:
        return f"file://{state_dir.expanduser().resolve()}"
    if spec is not None and spec.project is not None and spec.project.state:
        url = spec.project.state
        if url.startswith("file://"):
            return f"file://{Path(url[len('file://'):]).expanduser().resolve()}"
        return url
    return f"file://{default_state_dir()}"


def _project_name(spec: Spec, paths: list[Path]) -> str:
    if spec.project is not None and spec.project.name:
        return str(spec.project.name)
    first = paths[0].resolve() if paths else Path.cwd()
    base = first if first.is_dir() else first.parent
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", base.name).strip("-.") or "project"
    return name


def for_spec(spec: Spec, paths: list[Path], stack: str | None, state_dir: Path | None, engine: EngineKind) -> Workspace:
    return Workspace(project=_project_name(spec, paths), stack=stack or DEFAULT_STACK,
                     state_url=_state_url(spec, state_dir), engine_kind=engine)


def existing(project: str | None, stack: str | None, state_dir: Path | None, engine: EngineKind) -> Workspace:
    """The stack named by the options, or the only stack in the state directory."""
    url = _state_url(None, state_dir)
    if project and stack:
        return Workspace(project, stack, url, engine)
    stacks_dir = Path(url[len("file://"):]) / ".pulumi" / "stacks" if url.startswith("file://") else None
    found: list[tuple[str, str]] = []
    if stacks_dir is not None and stacks_dir.is_dir():
        # A first `up` killed before its first compaction leaves only the journal; a checkpoint deleted by
        # hand leaves its copy, and that stack still runs things: it must be found (loading it then says
        # how to restore), never reported as "no stack".
        patterns = ("*/*.json", "*/*.journal.jsonl", "*/*.json.bak")
        names = {(f.parent.name, f.name.split(".")[0]) for pattern in patterns for f in stacks_dir.glob(pattern)}
        for candidate in sorted(names):
            if (project in (None, candidate[0])) and (stack in (None, candidate[1])):
                found.append(candidate)
    if len(found) == 1:
        return Workspace(found[0][0], found[0][1], url, engine)
    where = stacks_dir or url
    if not found:
        raise NoStackError(f"no stack found in {where}; run `gpustack-iac up PATH` first, or pass --state-dir")
    listing = ", ".join(f"{p}/{s}" for p, s in found)
    raise WorkspaceError(f"several stacks in {where} ({listing}); choose one with --project and --stack")
