"""The Automation API engine against a real `pulumi` CLI: preview, up, a no-op preview, destroy of
File resources. Runs where the CLI is on PATH; elsewhere it is skipped, saying why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from filestack import files_program

from gpustack_iac.engine.model import StepOp

pytestmark = pytest.mark.skipif(
    shutil.which("pulumi") is None,
    reason="no `pulumi` CLI on PATH (it cannot be installed on this machine); the Automation API engine "
           "is covered here by its event translation tests only",
)


def test_preview_up_noop_destroy_through_the_pulumi_cli(tmp_path: Path) -> None:
    from gpustack_iac.engine.automation import AutomationEngine

    files = tmp_path / "files"
    engine = AutomationEngine(project="proj", stack="dev", state_url=f"file://{tmp_path / 'state'}",
                              passphrase="smoke-passphrase", work_dir=tmp_path / "work")
    program = files_program(files, {"a.txt": "A"})
    plan = engine.preview(program)
    assert [s.op for s in plan.steps if s.custom] == [StepOp.CREATE]
    assert engine.up(program).ok
    assert (files / "a.txt").read_text() == "A"
    assert not engine.preview(program).has_changes
    assert engine.destroy().ok
    assert not (files / "a.txt").exists()
