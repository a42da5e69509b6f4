"""The Pulumi SDK's private parts are used only on the verified range, and the engine works without them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from filestack import files_program, open_engine
from gpustack_iac.engine.embedded import sdk_hooks
from gpustack_iac.engine.model import StepOp

REPO = Path(__file__).resolve().parents[2]


def test_the_installed_sdk_is_in_the_verified_range_and_has_every_private_name() -> None:
    assert sdk_hooks.supported(), f"pulumi {sdk_hooks.sdk_version()} is outside {sdk_hooks.SUPPORTED} or lost a private name"
    assert sdk_hooks.registrations_in_flight() is not None


def test_the_range_in_pyproject_is_the_verified_one() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"pulumi\b", d)]
    low, high = sdk_hooks.SUPPORTED
    assert pin.replace(" ", "") == f"pulumi>=3.{low}.0,<3.{high + 1}", pin


@pytest.mark.parametrize("version, expected", [((3, 272, 0), True), ((3, 270, 1), True), ((3, 269, 0), False),
                                               ((3, 273, 0), False), ((4, 0, 0), False)])
def test_versions_off_the_range_use_no_private_part(version: tuple[int, ...], expected: bool) -> None:
    assert sdk_hooks.supported(version) is expected


def test_off_the_range_the_engine_runs_on_the_public_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_hooks, "supported", lambda sdk=None: False)
    assert sdk_hooks.registrations_in_flight() is None
    program = files_program(tmp_path / "files", {"a.txt": "A", "b.txt": "B"})
    engine = open_engine(tmp_path / "state")
    assert {s.op for s in engine.preview(program).steps if s.type.endswith(":File")} == {StepOp.CREATE}
    engine.up(program)
    assert (tmp_path / "files" / "a.txt").read_text() == "A" and (tmp_path / "files" / "b.txt").read_text() == "B"
