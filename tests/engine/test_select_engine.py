"""Which engine runs: the Pulumi CLI when it is on PATH, else the embedded one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpustack_iac.engine.base import Engine
from gpustack_iac.engine.factory import select_engine
from gpustack_iac.engine.embedded.engine import EmbeddedEngine
from gpustack_iac.errors import EngineError


@pytest.fixture()
def no_pulumi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_auto_without_cli_is_embedded(tmp_path: Path, no_pulumi_on_path: None) -> None:
    engine = select_engine("auto", project="proj", stack="dev", work_dir=tmp_path, passphrase="x")
    assert isinstance(engine, EmbeddedEngine)
    assert isinstance(engine, Engine)
    assert engine.store.path.is_relative_to(tmp_path / ".gpustack" / "state")
    assert engine.outputs() == {}


def test_state_url_is_honoured(tmp_path: Path) -> None:
    engine = select_engine("embedded", project="proj", stack="dev", state_url=f"file://{tmp_path / 's'}")
    assert isinstance(engine, EmbeddedEngine)
    assert engine.store.path == tmp_path / "s" / ".pulumi" / "stacks" / "proj" / "dev.json"


def test_pulumi_without_cli_says_how_to_install(no_pulumi_on_path: None) -> None:
    assert "pulumi" not in os.listdir(os.environ["PATH"])
    with pytest.raises(EngineError, match=r"pulumi CLI.*(pulumi\.com|get\.pulumi\.com)"):
        select_engine("pulumi", project="proj", stack="dev")


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(EngineError, match="unknown engine"):
        select_engine("terraform", project="proj", stack="dev")  # type: ignore[arg-type]
