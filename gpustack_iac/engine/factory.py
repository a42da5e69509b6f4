"""Picking an engine for a command: the one module that knows both engines.

Kept apart from `engine/base.py`, which both engines import for the protocol, so that no engine
module imports the factory that imports it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpustack_iac.engine.base import Engine, EngineKind
from gpustack_iac.engine.state import StateStore
from gpustack_iac.engine.stores import open_store
from gpustack_iac.errors import EngineError

PULUMI_INSTALL_URL = "https://www.pulumi.com/docs/install/"


def pulumi_cli_available() -> bool:
    return shutil.which("pulumi") is not None


def select_engine(
    kind: EngineKind,
    *,
    project: str,
    stack: str,
    state_url: str | None = None,
    passphrase: str | None = None,
    work_dir: Path | None = None,
    store: StateStore | None = None,
) -> Engine:
    """Pick an engine: `auto` means the Pulumi CLI when it is on PATH, else the embedded one.

    `state_url` is the state location (`file://DIR`; None means `.gpustack/state` under `work_dir`).
    `store`, when given, is the embedded engine's store: a caller that also reads the state shares
    one store, and so derives the passphrase key (deliberately slow) once.
    """
    base = work_dir if work_dir is not None else Path.cwd()
    url = state_url if state_url else f"file://{base / '.gpustack' / 'state'}"
    if kind == "auto":
        kind = "pulumi" if pulumi_cli_available() else "embedded"
    if kind == "embedded":
        from gpustack_iac.engine.embedded.engine import EmbeddedEngine  # the SDK, loaded only when used

        store = store if store is not None else open_store(url, project, stack, passphrase)
        return EmbeddedEngine(project=project, stack=stack, store=store)
    if kind == "pulumi":
        if not pulumi_cli_available():
            raise EngineError(
                "the pulumi CLI is not on PATH: install it (" + PULUMI_INSTALL_URL + ") or use --engine embedded"
            )
        from gpustack_iac.engine import automation

        engine: Engine = automation.AutomationEngine(
            project=project, stack=stack, state_url=url, passphrase=passphrase, work_dir=work_dir
        )
        return engine
    raise EngineError(f"unknown engine {kind!r}: expected auto, embedded or pulumi")
