"""A killed `up` resumes without losing or duplicating files; a second concurrent `up` is locked out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from filestack import GatedFileProvider, files_program, numbered, open_engine
from gpustack_iac.engine.model import StepOp
from gpustack_iac.errors import StateLockedError
from tests.support.wait import exited_stderr, wait_until

HELPER = Path(__file__).with_name("filestack.py")
WAIT_SECONDS = 90.0


def wait_for(predicate: Callable[[], object], what: str, proc: subprocess.Popen | None = None) -> None:  # type: ignore[type-arg]
    wait_until(predicate, WAIT_SECONDS, 0.05, what, proc=proc, explain=lambda: exited_stderr(proc))


@pytest.fixture()
def procs() -> Iterator[list[subprocess.Popen]]:  # type: ignore[type-arg]
    started: list[subprocess.Popen] = []  # type: ignore[type-arg]
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def start_up(tmp: Path, count: int, gated: list[str], parallel: int = 1, gated_deletes: list[str] | None = None,
             suffix: str = "") -> subprocess.Popen:  # type: ignore[type-arg]
    args = [sys.executable, str(HELPER), "--state", str(tmp / "state"), "--files", str(tmp / "files"),
            "--count", str(count), "--gate", str(tmp / "gate"), "--parallel", str(parallel), "--suffix", suffix]
    for name in gated:
        args += ["--gated", name]
    for name in gated_deletes or []:
        args += ["--gated-delete", name]
    (tmp / "gate").mkdir(exist_ok=True)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp)


def test_kill_9_between_steps_then_up_finishes(tmp_path: Path, procs: list) -> None:
    proc = start_up(tmp_path, 6, ["f003.txt"])
    procs.append(proc)
    wait_for(lambda: (tmp_path / "gate" / "reached-f003.txt").exists(), "the gated create", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    files = tmp_path / "files"
    on_disk = sorted(p.name for p in files.iterdir())
    engine = open_engine(tmp_path / "state")
    checkpoint = engine.store.load()
    assert [(op.type, op.resource.urn.rsplit("::", 1)[1]) for op in checkpoint.pending_operations] == [
        ("creating", "f003.txt")
    ]
    # Every file written before the kill is recorded, and nothing else (one step at a time: parallel 1).
    assert sorted(r.urn.rsplit("::", 1)[1] for r in checkpoint.resources if r.custom) == on_disk
    assert "f003.txt" not in on_disk and len(on_disk) >= 3
    created_before = set(on_disk)

    # The killed process left its lock: refused with the owner and the command to clear it, cleared
    # only because that owner is gone (what `gpustack-iac state unlock` does).
    with pytest.raises(StateLockedError, match=rf"pid {proc.pid}.*no longer running.*state unlock"):
        engine.preview(files_program(files, numbered(6)))
    assert engine.store.unlock() is not None

    (tmp_path / "gate" / "go").write_text("1")
    program = files_program(files, numbered(6), GatedFileProvider(str(tmp_path / "gate"), ["f003.txt"]))
    plan = engine.preview(program)
    assert {s.name: s.op for s in plan.steps if s.custom} == {
        name: StepOp.SAME if name in created_before else StepOp.CREATE for name in numbered(6)
    }
    assert any("interrupted" in w for w in plan.warnings)
    assert engine.up(program).ok

    assert sorted(p.name for p in files.iterdir()) == [f"f{i:03d}.txt" for i in range(6)]
    for name, content in numbered(6).items():
        assert (files / name).read_text() == content
    checkpoint = engine.store.load()
    urns = [r.urn for r in checkpoint.resources if r.custom]
    assert len(urns) == len(set(urns)) == 6
    assert checkpoint.pending_operations == []
    assert not engine.preview(program).has_changes


def test_second_concurrent_up_fails_fast_naming_the_owner(tmp_path: Path, procs: list) -> None:
    first = start_up(tmp_path, 2, ["f001.txt"])
    procs.append(first)
    wait_for(lambda: (tmp_path / "gate" / "reached-f001.txt").exists(), "the first up to hold the lock", first)

    second = start_up(tmp_path, 2, [])
    procs.append(second)
    out, err = second.communicate(timeout=WAIT_SECONDS)
    message = err.decode()
    assert second.returncode == 3, message
    assert str(first.pid) in message

    (tmp_path / "gate" / "go").write_text("1")
    first.communicate(timeout=WAIT_SECONDS)
    assert first.returncode == 0
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["f000.txt", "f001.txt"]


def test_kill_9_inside_a_replacement_then_up_finishes(tmp_path: Path, procs: list) -> None:
    """Killed after the new file of a create-before-delete replacement exists, before the old is deleted."""
    files, gate = tmp_path / "files", tmp_path / "gate"
    gate.mkdir()
    engine = open_engine(tmp_path / "state")
    # A delete runs the provider pickled in the state, so the gate must be in the first one.
    assert engine.up(files_program(files, numbered(3), GatedFileProvider(str(gate), [], ["f001.txt"]))).ok

    proc = start_up(tmp_path, 3, [], gated_deletes=["f001.txt"], suffix=".v2")
    procs.append(proc)
    wait_for(lambda: (gate / "reached-delete-f001.txt").exists(), "the gated delete", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert engine.store.unlock() is not None

    on_disk = {p.name for p in files.iterdir()}
    assert {"f001.txt", "f001.txt.v2"} <= on_disk  # the new one exists, the old one is not deleted yet
    checkpoint = engine.store.load()
    doomed = [r for r in checkpoint.resources if r.delete]
    assert [r.id for r in doomed] == [str(files / "f001.txt")]

    (gate / "go").write_text("1")
    program = files_program(files, numbered(3), GatedFileProvider(str(gate), [], ["f001.txt"]), suffix=".v2")
    plan = engine.preview(program)
    changes = {(s.name, s.op) for s in plan.steps if s.custom and s.changes}
    assert ("f001.txt", StepOp.DELETE) in changes  # the old half of the interrupted replacement
    assert ("f001.txt", StepOp.REPLACE) not in changes and ("f001.txt", StepOp.CREATE) not in changes
    assert engine.up(program).ok
    assert sorted(p.name for p in files.iterdir()) == ["f000.txt.v2", "f001.txt.v2", "f002.txt.v2"]
    checkpoint = engine.store.load()
    assert sorted(r.id for r in checkpoint.resources if r.custom) == [
        str(files / f"f00{i}.txt.v2") for i in range(3)
    ]
    assert checkpoint.pending_operations == [] and not engine.preview(program).has_changes
