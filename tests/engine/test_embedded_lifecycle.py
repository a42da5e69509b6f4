"""The embedded engine against the real File provider in temporary directories."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest

from filestack import FailingFileProvider, files_program, open_engine
from gpustack_iac.engine.model import DiffKind, StepOp, StepResult
from gpustack_iac.errors import EngineError, PlanStaleError

FILE_TYPE = "pulumi-python:dynamic/gpustack:File"


def urn(name: str) -> str:
    return f"urn:pulumi:dev::proj::{FILE_TYPE}::{name}"


def ops(plan_steps: list) -> dict[str, StepOp]:
    return {s.name: s.op for s in plan_steps if s.custom}


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "state", tmp_path / "files"


def test_preview_changes_nothing_and_plans_creates(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    plan = engine.preview(files_program(files, {"a.txt": "A", "b.txt": "B"}))
    assert ops(plan.steps) == {"a.txt": StepOp.CREATE, "b.txt": StepOp.CREATE}
    stack = [s for s in plan.steps if not s.custom]
    assert [s.urn for s in stack] == ["urn:pulumi:dev::proj::pulumi:pulumi:Stack::proj-dev"]
    a = next(s for s in plan.steps if s.name == "a.txt")
    assert a.urn == urn("a.txt")
    assert a.parent == "urn:pulumi:dev::proj::pulumi:pulumi:Stack::proj-dev"
    assert {d.path: d.new for d in a.diffs} == {"content": "A", "mode": 0o644, "path": str(files / "a.txt")}
    assert plan.count(StepOp.CREATE) == 2
    assert not files.exists()
    assert not engine.store.exists()


def test_up_noop_update_replace_delete_destroy(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    seen: list[StepResult] = []
    started: list[str] = []
    result = engine.up(
        files_program(files, {"a.txt": "A", "b.txt": "B"}),
        on_step=seen.append,
        on_start=lambda step: started.append(step.name),
    )
    assert result.ok
    assert (files / "a.txt").read_text() == "A" and (files / "b.txt").read_text() == "B"
    assert sorted(r.step.name for r in seen) == ["a.txt", "b.txt"]
    assert sorted(started) == ["a.txt", "b.txt"]
    checkpoint = engine.store.load()
    assert {r.urn for r in checkpoint.resources if r.custom} == {urn("a.txt"), urn("b.txt")}
    a_state = next(r for r in checkpoint.resources if r.urn == urn("a.txt"))
    assert a_state.id == str(files / "a.txt")
    assert a_state.outputs["size"] == 1 and a_state.inputs["mode"] == 0o644

    # No-op: nothing applied, nothing rewritten.
    mtime = (files / "a.txt").stat().st_mtime_ns
    serial = checkpoint.serial
    noop = engine.up(files_program(files, {"a.txt": "A", "b.txt": "B"}))
    assert noop.ok and noop.results == []
    assert (files / "a.txt").stat().st_mtime_ns == mtime
    assert engine.store.load().serial == serial

    # Update in place.
    program = files_program(files, {"a.txt": "A2", "b.txt": "B"})
    plan = engine.preview(program)
    assert ops(plan.steps) == {"a.txt": StepOp.UPDATE, "b.txt": StepOp.SAME}
    a = next(s for s in plan.steps if s.name == "a.txt")
    assert [(d.path, d.kind, d.old, d.new) for d in a.diffs] == [("content", DiffKind.UPDATE, "A", "A2")]
    assert engine.up(program).ok
    assert (files / "a.txt").read_text() == "A2"

    # Replace: the path forces it; create-before-delete leaves only the new file.
    def moved() -> None:
        from gpustack_iac.providers.file import File

        File("a.txt", path=str(files / "sub" / "a.txt"), content="A2")
        File("b.txt", path=str(files / "b.txt"), content="B")

    plan = engine.preview(moved)
    step = next(s for s in plan.steps if s.name == "a.txt")
    assert step.op is StepOp.REPLACE and step.replace_reasons == ["path"] and not step.delete_before_replace
    assert [d.path for d in step.diffs if d.forces_replace] == ["path"]
    assert engine.up(moved).ok
    assert not (files / "a.txt").exists() and (files / "sub" / "a.txt").read_text() == "A2"
    assert next(r for r in engine.store.load().resources if r.urn == urn("a.txt")).id == str(files / "sub" / "a.txt")

    # A resource no longer declared is deleted.
    only_b = files_program(files, {"b.txt": "B"})
    plan = engine.preview(only_b)
    assert ops(plan.steps) == {"b.txt": StepOp.SAME, "a.txt": StepOp.DELETE}
    assert engine.up(only_b).ok
    assert not (files / "sub" / "a.txt").exists()
    assert {r.urn for r in engine.store.load().resources if r.custom} == {urn("b.txt")}

    # Destroy removes everything, files and state entries.
    gone = engine.destroy()
    assert gone.ok and [r.step.op for r in gone.results] == [StepOp.DELETE, StepOp.DELETE]
    assert not (files / "b.txt").exists()
    assert engine.store.load().resources == []


def test_protect_refuses_delete_replace_and_destroy(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    protect = {"p.txt": pulumi.ResourceOptions(protect=True)}
    assert engine.up(files_program(files, {"p.txt": "P", "q.txt": "Q"}, opts=protect)).ok

    with pytest.raises(EngineError, match="protected"):
        engine.preview(files_program(files, {"q.txt": "Q"}))
    with pytest.raises(EngineError, match="protected"):
        engine.up(files_program(files, {"q.txt": "Q"}))
    with pytest.raises(EngineError, match="protected"):
        engine.destroy()
    assert (files / "p.txt").read_text() == "P" and (files / "q.txt").read_text() == "Q"

    def replaced() -> None:
        from gpustack_iac.providers.file import File

        File("p.txt", path=str(files / "elsewhere.txt"), content="P", opts=pulumi.ResourceOptions(protect=True))
        File("q.txt", path=str(files / "q.txt"), content="Q")

    with pytest.raises(EngineError, match="protected: refusing to replace"):
        engine.up(replaced)
    assert (files / "p.txt").exists() and not (files / "elsewhere.txt").exists()

    # Unprotect first, then it may go.
    assert engine.up(files_program(files, {"p.txt": "P", "q.txt": "Q"})).ok
    assert engine.destroy().ok
    assert not (files / "p.txt").exists()


def test_ignore_changes_replace_on_changes_retain_on_delete(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    opts = {
        "i.txt": pulumi.ResourceOptions(ignore_changes=["content"]),
        "r.txt": pulumi.ResourceOptions(replace_on_changes=["content"], delete_before_replace=True),
        "k.txt": pulumi.ResourceOptions(retain_on_delete=True),
    }
    assert engine.up(files_program(files, {"i.txt": "I", "r.txt": "R", "k.txt": "K"}, opts=opts)).ok

    changed = files_program(files, {"i.txt": "I2", "r.txt": "R2", "k.txt": "K"}, opts=opts)
    plan = engine.preview(changed)
    assert ops(plan.steps) == {"i.txt": StepOp.SAME, "r.txt": StepOp.REPLACE, "k.txt": StepOp.SAME}
    r = next(s for s in plan.steps if s.name == "r.txt")
    assert r.replace_reasons == ["content"] and r.delete_before_replace
    assert engine.up(changed).ok
    assert (files / "i.txt").read_text() == "I"  # ignored
    assert (files / "r.txt").read_text() == "R2"  # replaced in place, not deleted after
    i_state = next(x for x in engine.store.load().resources if x.urn == urn("i.txt"))
    assert i_state.inputs["content"] == "I"

    without_k = files_program(files, {"i.txt": "I", "r.txt": "R2"}, opts=opts)
    plan = engine.preview(without_k)
    k = next(s for s in plan.steps if s.name == "k.txt")
    assert k.op is StepOp.DELETE and k.retain_on_delete
    assert engine.up(without_k).ok
    assert (files / "k.txt").read_text() == "K"  # retained on disk
    assert urn("k.txt") not in {x.urn for x in engine.store.load().resources}


def test_components_outputs_secrets_and_unknowns(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state, passphrase="correct horse")
    applied: list[str] = []

    class Bundle(pulumi.ComponentResource):
        def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
            super().__init__("test:index:Bundle", name, None, opts)
            from gpustack_iac.providers.file import File

            inner = pulumi.ComponentResource("test:index:Inner", f"{name}-inner", None, pulumi.ResourceOptions(parent=self))
            self.conf = File(f"{name}-conf", path=str(files / "conf"), content=pulumi.Output.secret("token=hunter2"),
                             opts=pulumi.ResourceOptions(parent=inner))
            self.register_outputs({"digest": self.conf.sha256})

    def program() -> None:
        from gpustack_iac.providers.file import File

        bundle = Bundle("b")
        # The path depends on an output only known after apply.
        derived = File("derived", path=bundle.conf.sha256.apply(lambda h: (applied.append(h), str(files / h[:8]))[1]),
                       content="d")
        pulumi.export("digest", bundle.conf.sha256)
        pulumi.export("derived", derived.path)
        pulumi.export("secret", bundle.conf.content)

    plan = engine.preview(program)
    by_name = {s.name: s for s in plan.steps}
    conf = by_name["b-conf"]
    assert conf.urn == f"urn:pulumi:dev::proj::test:index:Bundle$test:index:Inner${FILE_TYPE}::b-conf"
    assert by_name["b-inner"].urn == "urn:pulumi:dev::proj::test:index:Bundle$test:index:Inner::b-inner"
    assert not by_name["b"].custom and by_name["b"].op is StepOp.CREATE
    content = next(d for d in conf.diffs if d.path == "content")
    assert content.secret and content.new is None and content.old is None
    path = next(d for d in by_name["derived"].diffs if d.path == "path")
    assert path.unknown
    assert applied == []  # apply callbacks never run on unknowns during a preview
    assert plan.outputs == {"digest": "(known after apply)", "derived": "(known after apply)", "secret": "[secret]"}
    assert plan.count(StepOp.CREATE) == 2  # components do not count

    result = engine.up(program)
    assert result.ok
    digest = result.outputs["digest"]
    assert (files / digest[:8]).read_text() == "d"
    assert result.outputs["secret"]["value"] == "token=hunter2"  # wrapped, never plain
    assert engine.outputs()["digest"] == digest
    component = next(r for r in engine.store.load().resources if r.urn.endswith("::b"))
    assert component.outputs == {"digest": digest}
    # The secret is encrypted at rest, in every file of the state.
    for p in state.rglob("*"):
        if p.is_file():
            assert b"hunter2" not in p.read_bytes(), p
    assert "hunter2" not in json.dumps(engine.export())
    assert engine.up(program).results == []


def test_refresh_vanished_and_drift(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    program = files_program(files, {"a.txt": "A", "b.txt": "B"})
    assert engine.up(program).ok
    (files / "a.txt").unlink()
    (files / "b.txt").write_text("tampered")

    plan = engine.preview(program, refresh=True)
    drift = {s.name: s for s in plan.steps if s.op is StepOp.REFRESH_DRIFT}
    assert set(drift) == {"a.txt", "b.txt"}
    assert "vanished" in drift["a.txt"].detail
    assert ops([s for s in plan.steps if s.op is not StepOp.REFRESH_DRIFT]) == {
        "a.txt": StepOp.CREATE,
        "b.txt": StepOp.UPDATE,
    }
    # Without refresh, the state is believed as it is.
    assert set(ops(engine.preview(program, refresh=False).steps).values()) == {StepOp.SAME}

    refreshed = engine.refresh()
    assert {s.name for s in refreshed.steps} == {"a.txt", "b.txt"}
    assert urn("a.txt") not in {r.urn for r in engine.store.load().resources}

    assert engine.up(program).ok
    assert (files / "a.txt").read_text() == "A" and (files / "b.txt").read_text() == "B"
    assert not engine.preview(program).has_changes


def test_saved_plan_applies_or_is_stale(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    program = files_program(files, {"a.txt": "A"})
    saved = engine.preview(program)
    assert engine.up(program, plan=saved).ok

    plan_b = engine.preview(files_program(files, {"a.txt": "A", "b.txt": "B"}))
    with pytest.raises(PlanStaleError):
        engine.up(files_program(files, {"a.txt": "A", "c.txt": "C"}), plan=plan_b)
    engine.up(files_program(files, {"a.txt": "A9"}))
    with pytest.raises(PlanStaleError, match="state"):
        engine.up(files_program(files, {"a.txt": "A", "b.txt": "B"}), plan=plan_b)
    assert not (files / "b.txt").exists() and not (files / "c.txt").exists()


def test_provider_failure_stops_and_keeps_state_true(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    names = {"a.txt": "A", "bad.txt": "X"}
    result = engine.up(files_program(files, names, provider=FailingFileProvider(["bad.txt"])))
    assert not result.ok
    failed = [r for r in result.results if not r.ok]
    assert [r.step.name for r in failed] == ["bad.txt"] and "refusing to create" in failed[0].error
    checkpoint = engine.store.load()
    # The independent resource was applied and recorded; the failed one left no trace.
    assert {r.urn for r in checkpoint.resources if r.custom} == {urn("a.txt")}
    assert (files / "a.txt").read_text() == "A" and not (files / "bad.txt").exists()
    assert checkpoint.pending_operations == []
    assert engine.up(files_program(files, names)).ok
    assert (files / "bad.txt").read_text() == "X"


def test_plugin_resources_plan_but_up_refuses(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)

    def program() -> None:
        from gpustack_iac.providers.file import File

        bucket = pulumi.CustomResource("aws:s3/bucket:Bucket", "models", {"bucket": "models", "arn": None})
        File("note.txt", path=str(files / "note.txt"), content="n", opts=pulumi.ResourceOptions(depends_on=[bucket]))

    plan = engine.preview(program)
    bucket = next(s for s in plan.steps if s.name == "models")
    assert bucket.op is StepOp.CREATE and bucket.type == "aws:s3/bucket:Bucket"
    assert any("aws:s3/bucket:Bucket" in w for w in plan.warnings)
    with pytest.raises(EngineError, match=r"aws:s3/bucket:Bucket.*pulumi.com/docs/install"):
        engine.up(program)
    assert not (files / "note.txt").exists()


def test_check_failures_are_reported(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)

    def program() -> None:
        from gpustack_iac.providers.file import File

        File("bad", path=str(files / "bad"), content="x", mode=0o77777)

    with pytest.raises(EngineError, match=r"::bad: mode: expected a permission mode"):
        engine.preview(program)


def test_program_errors_are_engine_errors(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)

    def program() -> None:
        raise ValueError("bad configuration value")

    with pytest.raises(EngineError, match="the program failed: ValueError: bad configuration value"):
        engine.preview(program)
    with pytest.raises(EngineError, match="bad configuration value"):
        engine.up(program)
    assert engine.store.load().resources == []


def test_secret_input_change_is_hidden_in_the_plan(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)

    def program(token: str):
        def run() -> None:
            from gpustack_iac.providers.file import File

            File("token", path=str(files / "token"), content=pulumi.Output.secret(token), mode=0o600)

        return run

    assert engine.up(program("first-secret")).ok
    plan = engine.preview(program("second-secret"))
    step = next(s for s in plan.steps if s.name == "token")
    assert step.op is StepOp.UPDATE
    assert [(d.path, d.secret, d.old, d.new) for d in step.diffs] == [("content", True, None, None)]
    assert "second-secret" not in repr(plan) and "first-secret" not in repr(plan)
    assert engine.up(program("second-secret")).ok
    assert (files / "token").read_text() == "second-secret"
    assert (files / "token").stat().st_mode & 0o777 == 0o600
    stored = next(r for r in engine.store.load().resources if r.urn == urn("token"))
    assert stored.outputs["content"] == {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                                         "value": "second-secret"}
    for p in state.rglob("*"):
        if p.is_file():
            assert b"second-secret" not in p.read_bytes()


def test_additional_secret_outputs_are_wrapped(dirs: tuple[Path, Path]) -> None:
    state, files = dirs
    engine = open_engine(state)
    opts = {"s.txt": pulumi.ResourceOptions(additional_secret_outputs=["sha256"])}
    result = engine.up(files_program(files, {"s.txt": "S"}, opts=opts))
    assert result.ok
    stored = next(r for r in engine.store.load().resources if r.urn == urn("s.txt"))
    assert stored.outputs["sha256"]["4dabf18193072939515e22adb298388d"] == "1b47061264138c4ac30d75fd1eb44270"
    assert stored.outputs["size"] == 1
    digest = stored.outputs["sha256"]["value"]
    for p in state.rglob("*.json"):
        assert digest.encode() not in p.read_bytes()


def test_failed_delete_of_a_replaced_resource_is_kept_and_retried(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    state, files = dirs
    switch = tmp_path / "deletes-fail"
    switch.write_text("1")
    provider = FailingFileProvider([], delete_switch=str(switch))
    engine = open_engine(state)
    assert engine.up(files_program(files, {"a.txt": "A"}, provider=provider)).ok

    moved = files_program(files, {"a.txt": "A"}, provider=provider, suffix=".v2")
    result = engine.up(moved)
    assert not result.ok and "refusing to delete a.txt" in result.results[-1].error
    checkpoint = engine.store.load()
    live = [r for r in checkpoint.resources if r.urn == urn("a.txt") and not r.delete]
    doomed = [r for r in checkpoint.resources if r.urn == urn("a.txt") and r.delete]
    assert [r.id for r in live] == [str(files / "a.txt.v2")]
    assert [r.id for r in doomed] == [str(files / "a.txt")]

    switch.unlink()
    plan = engine.preview(moved)
    assert [(s.op, s.detail) for s in plan.steps if s.changes] == [
        (StepOp.DELETE, "left over from an interrupted replacement")
    ]
    assert engine.up(moved).ok
    assert sorted(p.name for p in files.iterdir()) == ["a.txt.v2"]
    assert [r.id for r in engine.store.load().resources if r.custom] == [str(files / "a.txt.v2")]
