"""Order of operations: create-before-delete, delete-before-replace, deletes in reverse dependency order."""

from __future__ import annotations

from pathlib import Path

import pulumi

from filestack import RecordingFileProvider, open_engine
from gpustack_iac.engine.model import StepOp
from gpustack_iac.providers.file import File


def chain(files: Path, provider: RecordingFileProvider, names: list[str], suffix: str = "",
          opts: pulumi.ResourceOptions | None = None) -> None:
    """Each file depends on the previous one."""
    previous: File | None = None
    for name in names:
        depends = [previous] if previous is not None else []
        previous = File(name, path=str(files / f"{name}{suffix}"), content=name, provider=provider,
                        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends)))


def test_undeclared_resources_are_deleted_dependents_first(tmp_path: Path) -> None:
    files, log = tmp_path / "files", tmp_path / "ops.log"
    provider = RecordingFileProvider(str(log))
    engine = open_engine(tmp_path / "state")
    assert engine.up(lambda: chain(files, provider, ["a", "b", "c", "d"])).ok
    assert log.read_text().split("\n")[:-1] == ["create a", "create b", "create c", "create d"]
    log.unlink()

    plan = engine.preview(lambda: None)
    assert [s.name for s in plan.steps if s.op is StepOp.DELETE] == ["d", "c", "b", "a"]
    assert engine.up(lambda: None).ok
    assert log.read_text().split("\n")[:-1] == ["delete d", "delete c", "delete b", "delete a"]
    assert not any(files.iterdir())


def test_replace_creates_before_deleting_unless_told_otherwise(tmp_path: Path) -> None:
    files, log = tmp_path / "files", tmp_path / "ops.log"
    provider = RecordingFileProvider(str(log))
    engine = open_engine(tmp_path / "state")
    assert engine.up(lambda: chain(files, provider, ["x"])).ok
    log.unlink()

    assert engine.up(lambda: chain(files, provider, ["x"], suffix=".v2")).ok
    assert log.read_text().split("\n")[:-1] == ["create x.v2", "delete x"]
    log.unlink()

    dbr = pulumi.ResourceOptions(delete_before_replace=True)
    plan = engine.preview(lambda: chain(files, provider, ["x"], suffix=".v3", opts=dbr))
    step = next(s for s in plan.steps if s.name == "x")
    assert step.op is StepOp.REPLACE and step.delete_before_replace
    assert engine.up(lambda: chain(files, provider, ["x"], suffix=".v3", opts=dbr)).ok
    assert log.read_text().split("\n")[:-1] == ["delete x.v2", "create x.v3"]
    assert sorted(p.name for p in files.iterdir()) == ["x.v3"]


def test_custom_timeouts_are_accepted(tmp_path: Path) -> None:
    files = tmp_path / "files"
    engine = open_engine(tmp_path / "state")
    opts = pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create="1m", update="1m", delete="1m"))

    def program() -> None:
        File("t", path=str(files / "t"), content="t", opts=opts)

    assert engine.up(program).ok
    assert (files / "t").read_text() == "t"
