"""Remote state (S3, GCS, Azure Blob, PostgreSQL) against real stand-ins the tests start.

Per store: a stack applied from one directory is read and destroyed from another; two concurrent `up`s
let exactly one proceed, the other exits 3 naming the owner; `up` killed with SIGKILL mid-apply is
finished from another directory with no duplicate; what is written is Pulumi's DIY layout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from filestack import PROJECT, STACK, GatedFileProvider, files_program, numbered, open_engine
from gpustack_iac.engine.remote.open import open_object_store
from gpustack_iac.engine.remote.store import RemoteStateStore
from gpustack_iac.errors import StateError, StateLockedError
from tests.support.standins import StandIn, standin  # noqa: F401 (a fixture)

HELPER = Path(__file__).with_name("filestack.py")
FIXTURE = Path(__file__).with_name("fixtures") / "pulumi_checkpoint_nested_secret.json"
WAIT_SECONDS = 120.0


@pytest.fixture()
def state_url(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in standin.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "test-passphrase")
    return standin.url(f"gpustack-{uuid.uuid4().hex[:12]}")


def _wait_for(predicate, what: str, proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    import time

    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"up exited ({proc.returncode}) before {what}: {proc.communicate()[1].decode()[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


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


def _start_up(url: str, runner: Path, files: Path, gate: Path, count: int, gated: list[str]) -> subprocess.Popen:  # type: ignore[type-arg]
    runner.mkdir(exist_ok=True)
    gate.mkdir(exist_ok=True)
    args = [sys.executable, str(HELPER), "--state", url, "--files", str(files), "--count", str(count),
            "--gate", str(gate), "--parallel", "1"]
    for name in gated:
        args += ["--gated", name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPER.parent), str(Path.cwd())])}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=runner, env=env)


def test_applied_here_read_and_destroyed_there(state_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = tmp_path / "files"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert open_engine(state_url).up(files_program(files, numbered(3))).ok

    objects = open_object_store(state_url)
    keys = objects.list(".pulumi/")
    assert ".pulumi/meta.yaml" in keys and f".pulumi/stacks/{PROJECT}/{STACK}.json" in keys
    assert any(k.startswith(f".pulumi/history/{PROJECT}/{STACK}/") for k in keys)
    assert not any(k.startswith(".pulumi/locks/") for k in keys), "the lock is released"

    monkeypatch.chdir(tmp_path / "b")  # another runner: nothing local is shared
    other = open_engine(state_url)
    assert sorted(r.urn.rsplit("::", 1)[1] for r in other.store.load().resources if r.custom) == sorted(numbered(3))
    assert not other.preview(files_program(files, numbered(3))).has_changes
    assert other.destroy().ok
    assert not files.exists() or not any(files.iterdir())
    assert [r for r in other.store.load().resources if r.custom] == []


def test_written_object_is_a_pulumi_diy_checkpoint(state_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The object has the shape of Pulumi's own checkpoint (the fixture), and Pulumi's own checkpoint reads back."""
    monkeypatch.chdir(tmp_path)
    engine = open_engine(state_url)
    assert engine.up(files_program(tmp_path / "files", numbered(2))).ok
    objects = open_object_store(state_url)
    ours = json.loads(objects.get(f".pulumi/stacks/{PROJECT}/{STACK}.json") or b"")
    pulumi = json.loads(FIXTURE.read_text())
    assert ours["version"] == pulumi["version"] == 3
    assert ours["checkpoint"]["stack"] == f"organization/{PROJECT}/{STACK}"
    latest, theirs = ours["checkpoint"]["latest"], pulumi["checkpoint"]["latest"]
    assert set(theirs["manifest"]) <= set(latest["manifest"])
    for res in latest["resources"]:
        assert {"urn", "custom", "type"} <= set(res)
        assert res["urn"].startswith(f"urn:pulumi:{STACK}::{PROJECT}::")
    assert latest["resources"][0]["type"] == theirs["resources"][0]["type"] == "pulumi:pulumi:Stack"
    assert objects.get(".pulumi/meta.yaml") == b"version: 1\n"

    # The reverse: a checkpoint in Pulumi's own format, put where `pulumi login` would, reads back.
    objects.put(f".pulumi/stacks/{PROJECT}/{STACK}.json", FIXTURE.read_bytes())
    store = RemoteStateStore(state_url, PROJECT, STACK, passphrase="unused")
    loaded = store._read_raw()  # secrets stay encrypted: the fixture's passphrase is not ours
    assert [r["urn"].rsplit("::", 1)[1] for r in loaded.resources] == [
        r["urn"].rsplit("::", 1)[1] for r in pulumi["checkpoint"]["latest"]["resources"]
    ]
    assert loaded.salt == theirs["secrets_providers"]["state"]["salt"]


def test_create_if_absent_is_atomic(state_url: str) -> None:
    """The stand-in enforces the primitive the lock is built on (for gs://, the strict proxy in front of
    gcp-storage-emulator does: test_gcs_preconditions.py)."""
    objects = open_object_store(state_url)
    assert objects.create("probe", b"first") is True
    assert objects.create("probe", b"second") is False
    assert objects.get("probe") == b"first"


@pytest.mark.slow
def test_second_concurrent_up_exits_3_naming_the_owner(state_url: str, standin: StandIn, tmp_path: Path,
                                                         procs: list) -> None:  # type: ignore[type-arg]
    gate = tmp_path / "gate"
    first = _start_up(state_url, tmp_path / "a", tmp_path / "files", gate, 2, ["f001.txt"])
    procs.append(first)
    _wait_for(lambda: (gate / "reached-f001.txt").exists(), "the first up to hold the lock", first)
    second = _start_up(state_url, tmp_path / "b", tmp_path / "files", tmp_path / "gate-b", 2, [])
    procs.append(second)
    _, err = second.communicate(timeout=WAIT_SECONDS)
    assert second.returncode == 3, (err.decode(), [p.name for p in (tmp_path / "files").iterdir()])
    assert f"pid {first.pid}" in err.decode()
    (gate / "go").write_text("1")
    first.communicate(timeout=WAIT_SECONDS)
    assert first.returncode == 0
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["f000.txt", "f001.txt"]


@pytest.mark.slow
def test_kill_9_mid_apply_then_up_from_another_directory_converges(
    state_url: str, standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: list  # type: ignore[type-arg]
) -> None:
    gate, files = tmp_path / "gate", tmp_path / "files"
    proc = _start_up(state_url, tmp_path / "a", files, gate, 5, ["f003.txt"])
    procs.append(proc)
    _wait_for(lambda: (gate / "reached-f003.txt").exists(), "the gated create", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = sorted(p.name for p in files.iterdir())
    assert before == ["f000.txt", "f001.txt", "f002.txt"]

    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    engine = open_engine(state_url)
    checkpoint = engine.store.load()  # every finished step was written before the kill
    assert sorted(r.urn.rsplit("::", 1)[1] for r in checkpoint.resources if r.custom) == before
    assert [op.resource.urn.rsplit("::", 1)[1] for op in checkpoint.pending_operations] == ["f003.txt"]
    program = files_program(files, numbered(5), GatedFileProvider(str(gate), []))
    # The dead runner's lock is stale, but it is only taken over by an explicit unlock (the stale-lock rules).
    with pytest.raises(StateLockedError, match=rf"pid {proc.pid}.*no longer running.*state unlock"):
        engine.up(program)
    assert engine.store.unlock().pid == proc.pid
    assert engine.up(program).ok
    assert sorted(p.name for p in files.iterdir()) == sorted(numbered(5))
    urns = [r.urn for r in engine.store.load().resources if r.custom]
    assert len(urns) == len(set(urns)) == 5
    assert not engine.preview(program).has_changes


def test_unlock_refuses_a_live_owner(state_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = RemoteStateStore(state_url, PROJECT, STACK)
    with store.lock("up"):
        assert store.lock_owner() is not None and store.lock_owner().pid == os.getpid()
        with pytest.raises(StateLockedError, match="still running"):
            RemoteStateStore(state_url, PROJECT, STACK).unlock()
    assert store.lock_owner() is None


def test_lock_of_another_host_is_taken_over_only_with_force(state_url: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock whose owner ran elsewhere cannot be checked from here: `up` and a plain unlock refuse it,
    `unlock --force` clears it, and then the next `up` takes the lock with the store's create."""
    import json as _json

    from gpustack_iac.engine.remote.lock import lock_dir

    monkeypatch.chdir(tmp_path)
    objects = open_object_store(state_url)
    theirs = {"pid": 4242, "host": "ci-runner-elsewhere", "started_at": 1.0, "operation": "up"}
    assert objects.create(lock_dir(PROJECT, STACK) + "gpustack-iac.json", _json.dumps(theirs).encode())
    engine = open_engine(state_url)
    program = files_program(tmp_path / "files", numbered(1))
    with pytest.raises(StateLockedError, match="pid 4242 on host ci-runner-elsewhere"):
        engine.up(program)
    with pytest.raises(StateError, match="not this one.*--force"):
        engine.store.unlock()
    assert engine.store.unlock(force=True).host == "ci-runner-elsewhere"
    assert engine.up(program).ok
    assert engine.store.lock_owner() is None


def test_missing_passphrase_is_one_clear_error(state_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpustack_iac.engine.wire import SECRET_SIG, SECRET_SIG_KEY

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GPUSTACK_PASSPHRASE")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    store = RemoteStateStore(state_url, PROJECT, STACK)
    with store.lock("up"), pytest.raises(StateError, match="set GPUSTACK_PASSPHRASE"):
        store.set_outputs({"token": {SECRET_SIG_KEY: SECRET_SIG, "value": "s3cret"}})
    assert not list(tmp_path.iterdir()), "no passphrase file left on the runner"


def test_every_command_reaches_the_remote_stack(state_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--state URL` or `GPUSTACK_STATE` from a directory with no configuration; `stack ls` / `stack rm`;
    a destroyed stack is no candidate when the commands pick the one stack."""
    from click.testing import CliRunner

    from gpustack_iac.cli import main
    from gpustack_iac.engine.embedded.engine import EmbeddedEngine
    from gpustack_iac.engine.stores import open_store

    monkeypatch.chdir(tmp_path)
    files = tmp_path / "files"
    assert open_engine(state_url).up(files_program(files, numbered(3))).ok
    old = EmbeddedEngine(PROJECT, "old", open_store(state_url, PROJECT, "old", "test-passphrase"))
    assert old.up(files_program(tmp_path / "old-files", numbered(1))).ok and old.destroy().ok

    runner = CliRunner()
    listed = runner.invoke(main, ["state", "list", "--state", state_url])
    assert listed.exit_code == 0, listed.output
    assert "f000.txt" in listed.output  # the destroyed stack `old` does not make the choice ambiguous
    monkeypatch.setenv("GPUSTACK_STATE", state_url)
    stacks = runner.invoke(main, ["stack", "ls"])
    assert stacks.exit_code == 0, stacks.output
    assert f"{PROJECT}/{STACK}\t3 resources" in stacks.output and f"{PROJECT}/old\tempty (destroyed)" in stacks.output
    refused = runner.invoke(main, ["stack", "rm", "--project", PROJECT, "--stack", STACK])
    assert refused.exit_code == 1 and "still records 3 resources" in refused.output
    removed = runner.invoke(main, ["stack", "rm", "--project", PROJECT, "--stack", "old"])
    assert removed.exit_code == 0, removed.output
    assert f"{PROJECT}/old" not in runner.invoke(main, ["stack", "ls"]).output
    destroyed = runner.invoke(main, ["destroy", "--yes"])
    assert destroyed.exit_code == 0, destroyed.output
    assert not any(files.iterdir())


def test_stack_ls_and_rm_on_file_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from gpustack_iac.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "test-passphrase")
    engine = open_engine(tmp_path / "state")
    assert engine.up(files_program(tmp_path / "files", numbered(1))).ok and engine.destroy().ok
    runner = CliRunner()
    assert f"{PROJECT}/{STACK}\tempty (destroyed)" in runner.invoke(main, ["stack", "ls", "--state-dir", "state"]).output
    done = runner.invoke(main, ["stack", "rm", "--state", "state", "--project", PROJECT, "--stack", STACK])
    assert done.exit_code == 0, done.output
    assert not list((tmp_path / "state" / ".pulumi" / "stacks" / PROJECT).iterdir())
    assert "No stack at" in runner.invoke(main, ["stack", "ls", "--state", "state"]).output
