"""Where a command's stack lives: project and stack names, the state location, the engine.

Commands that take configuration paths (`plan`, `up`) name the project from the configuration;
commands that do not (`destroy`, `output`, `state`, `status`, `logs`) find the one stack in the
state location, or are told which with `--project` / `--stack`.

The state location, first found wins: `--state URL` (or `--state-dir DIR`), the configuration's
`type: project` `state:`, `$GPUSTACK_STATE`, `$GPUSTACK_STATE_DIR`, `./.gpustack/state`.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gpustack_iac.engine.base import Engine, EngineKind
from gpustack_iac.engine.factory import pulumi_cli_available, select_engine
from gpustack_iac.engine.runsecrets import RunSecrets
from gpustack_iac.engine.state import StateStore
from gpustack_iac.engine.stores import list_stacks, open_store
from gpustack_iac.errors import GpustackError, StateError
from gpustack_iac.spec.loader import Spec

DEFAULT_STACK = "dev"
STATE_DIR_ENV = "GPUSTACK_STATE_DIR"
STATE_ENV = "GPUSTACK_STATE"


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
        """The stack's fingerprint key (StateStore.fingerprint_key); a random one where the Pulumi CLI keeps remote state."""
        if self.state_url.startswith("file://") or self._embedded:
            return self._store.fingerprint_key()
        return self._ephemeral_key

    @cached_property
    def _embedded(self) -> bool:
        return self.engine_kind == "embedded" or (self.engine_kind == "auto" and not pulumi_cli_available())

    @cached_property
    def _ephemeral_key(self) -> bytes:
        return secrets.token_bytes(32)

    # One store and one engine per command: each StateStore derives the passphrase key (PBKDF2, about
    # 0.3 s) the first time it touches a secret, so a plan that also reads the state must not open a second.
    @cached_property
    def _store(self) -> StateStore:
        return open_store(self.state_url, self.project, self.stack, None)

    @cached_property
    def _engine(self) -> Engine:
        store = self._store if self.state_url.startswith("file://") or self._embedded else None
        return select_engine(self.engine_kind, project=self.project, stack=self.stack, state_url=self.state_url, store=store)


def default_state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else (Path.cwd() / ".gpustack" / "state").resolve()


def _normalise(location: str | Path) -> str:
    """A state URL with any local directory made absolute (a later chdir must not move it)."""
    text = str(location)
    if "://" not in text:
        return f"file://{Path(text).expanduser().resolve()}"
    if text.startswith("file://"):
        return f"file://{Path(text[len('file://'):] or '.gpustack/state').expanduser().resolve()}"
    return text


def shown_url(url: str) -> str:
    """A state URL fit to print: a password in it (postgres://user:pw@...) is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _state_url(spec: Spec | None, state: str | Path | None) -> str:
    if state:
        return _normalise(state)
    if spec is not None and spec.project is not None and spec.project.state:
        return _normalise(spec.project.state)
    if os.environ.get(STATE_ENV):
        return _normalise(os.environ[STATE_ENV])
    return f"file://{default_state_dir()}"


def _project_name(spec: Spec, paths: list[Path]) -> str:
    if spec.project is not None and spec.project.name:
        return str(spec.project.name)
    first = paths[0].resolve() if paths else Path.cwd()
    base = first if first.is_dir() else first.parent
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", base.name).strip("-.") or "project"
    return name


def for_spec(spec: Spec, paths: list[Path], stack: str | None, state_dir: str | Path | None, engine: EngineKind,
             project: str | None = None) -> Workspace:
    return Workspace(project=project or _project_name(spec, paths), stack=stack or DEFAULT_STACK,
                     state_url=_state_url(spec, state_dir), engine_kind=engine)


def existing(project: str | None, stack: str | None, state_dir: str | Path | None, engine: EngineKind) -> Workspace:
    """The stack named by the options, or the only stack in the state location."""
    url = _state_url(None, state_dir)
    if project and stack:
        return Workspace(project, stack, url, engine)
    stacks_dir = Path(url[len("file://"):]) / ".pulumi" / "stacks" if url.startswith("file://") else None
    found: list[tuple[str, str]] = []
    names = set(list_stacks(url)) if stacks_dir is None else _file_stacks(stacks_dir)
    for candidate in sorted(names):
        if (project in (None, candidate[0])) and (stack in (None, candidate[1])):
            found.append(candidate)
    if len(found) > 1:
        # Destroyed (or never applied) stacks stay listed by `stack ls` but are no candidate.
        found = [c for c in found if _has_resources(Workspace(c[0], c[1], url, engine))] or found
    if len(found) == 1:
        return Workspace(found[0][0], found[0][1], url, engine)
    where = stacks_dir or shown_url(url)
    if not found:
        raise NoStackError(f"no stack found in {where}; run `gpustack-iac up PATH` first, or pass --state")
    listing = ", ".join(f"{p}/{s}" for p, s in found)
    raise WorkspaceError(f"several stacks with resources in {where} ({listing}); choose one with --project and --stack "
                         "(`gpustack-iac stack ls` lists them)")


def all_stacks(state: str | Path | None) -> tuple[str, list[tuple[str, str]]]:
    """The state URL and every (project, stack) at it, destroyed ones included."""
    url = _state_url(None, state)
    if not url.startswith("file://"):
        return url, list_stacks(url)
    return url, sorted(_file_stacks(Path(url[len("file://"):]) / ".pulumi" / "stacks"))


def _file_stacks(stacks_dir: Path) -> set[tuple[str, str]]:
    if not stacks_dir.is_dir():
        return set()
    # A first `up` killed before its first compaction leaves only the journal; a checkpoint deleted by
    # hand leaves its copy, and that stack still runs things: it must be found (loading it then says
    # how to restore), never reported as "no stack".
    patterns = ("*/*.json", "*/*.journal.jsonl", "*/*.json.bak")
    return {(f.parent.name, f.name.split(".")[0]) for pattern in patterns for f in stacks_dir.glob(pattern)}


def _has_resources(space: Workspace) -> bool:
    try:
        return space.store().deployed() > 0
    except StateError:
        return True  # unreadable: a candidate, so the command that loads it says what is wrong
