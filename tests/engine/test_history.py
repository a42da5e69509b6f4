"""Update history in Pulumi's DIY layout, on file state and on S3 (moto's server): every `up`,
`destroy` and `refresh` writes `<stack>-<ns>.history.json` (Pulumi's UpdateInfo) and the checkpoint's
copy beside it; `gpustack-iac stack history` lists them, and reads a record Pulumi's CLI wrote.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from filestack import PROJECT, STACK, FailingFileProvider, files_program, numbered, open_engine
from gpustack_iac.cli import main
from gpustack_iac.engine.checkpoint import parse_checkpoint
from gpustack_iac.engine.history import history_dir
from gpustack_iac.engine.remote.open import open_object_store
from tests.support.standins import S3, moto_s3

# The fields `pulumi stack history --json` reads (pkg/backend/updates.go, UpdateInfo).
PULUMI_FIELDS = {"kind", "startTime", "message", "environment", "config", "version", "result", "endTime"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("history-moto")) as running:
        yield running


@pytest.fixture(params=["file", "s3"])
def state(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "test-passphrase")
    monkeypatch.chdir(tmp_path)
    if request.param == "file":
        return str(tmp_path / "state")
    stand_in: S3 = request.getfixturevalue("s3")
    for key, value in stand_in.env.items():
        monkeypatch.setenv(key, value)
    return stand_in.url(f"history-{uuid.uuid4().hex[:12]}")


def _entries(state: str) -> dict[str, bytes]:
    """The stack's history objects by name."""
    prefix = history_dir(PROJECT, STACK)
    if "://" in state:
        objects = open_object_store(state)
        return {k[len(prefix):]: objects.get(k) or b"" for k in objects.list(prefix)}
    folder = Path(state) / prefix
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def _records(state: str) -> list[dict]:  # type: ignore[type-arg]
    entries = _entries(state)
    return [json.loads(entries[k]) for k in sorted(entries) if k.endswith(".history.json")]


def test_every_operation_is_recorded_with_its_checkpoint_copy(state: str, tmp_path: Path) -> None:
    files = tmp_path / "files"
    engine = open_engine(state)
    assert engine.up(files_program(files, numbered(3))).ok
    failing = files_program(files, numbered(4), FailingFileProvider(["f003.txt"]))
    assert not engine.up(failing).ok
    engine.refresh()
    assert engine.destroy().ok

    records = _records(state)
    assert [(r["kind"], r["result"]) for r in records] == [
        ("update", "succeeded"), ("update", "failed"), ("refresh", "succeeded"), ("destroy", "succeeded")]
    for r in records:
        assert PULUMI_FIELDS <= set(r) and r["startTime"] <= r["endTime"]
    assert records[0]["resourceChanges"] == {"create": 3}
    assert "resourceChanges" not in records[1]  # f003 failed: nothing was changed
    assert "resourceChanges" not in records[2]  # read back, nothing drifted
    assert records[3]["resourceChanges"] == {"delete": 3}
    assert [r["version"] for r in records] == sorted(r["version"] for r in records)

    entries = _entries(state)
    names = sorted(entries)
    assert all(n.startswith(f"{STACK}-") for n in names)
    stems = {n.rsplit(".history.json", 1)[0] for n in names if n.endswith(".history.json")}
    assert stems == {n.rsplit(".checkpoint.json", 1)[0] for n in names if n.endswith(".checkpoint.json")}
    first = sorted(stems)[0]
    copy = parse_checkpoint(entries[f"{first}.checkpoint.json"], Path(first))
    assert sorted(r["urn"].rsplit("::", 1)[1] for r in copy.resources if r.get("custom")) == sorted(numbered(3))


def test_stack_history_lists_newest_first_and_reads_pulumis_own_record(state: str, tmp_path: Path) -> None:
    engine = open_engine(state)
    assert engine.up(files_program(tmp_path / "files", numbered(2))).ok
    assert engine.destroy().ok
    # A record as Pulumi's CLI writes it (`pulumi up` against the same backend), newest of all.
    theirs = {"kind": "update", "startTime": 4102444800, "message": "from pulumi", "environment": {"exec.kind": "cli"},
              "config": {}, "version": 9, "result": "succeeded", "endTime": 4102444805,
              "resourceChanges": {"create": 1, "same": 2}}
    name = f"{history_dir(PROJECT, STACK)}{STACK}-9999999999999999999.history.json"
    if "://" in state:
        open_object_store(state).put(name, json.dumps(theirs).encode())
    else:
        (Path(state) / name).write_text(json.dumps(theirs))

    runner = CliRunner()
    listed = runner.invoke(main, ["stack", "history", "--state", state, "--project", PROJECT, "--stack", STACK])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("2100-01-01 00:00:00Z\tupdate\tsucceeded\t5s\tversion 9\tcreate 1, same 2")
    assert "\tdestroy\tsucceeded\t" in lines[1] and lines[1].endswith("delete 2")
    assert "\tupdate\tsucceeded\t" in lines[2] and lines[2].endswith("create 2")
    as_json = runner.invoke(main, ["stack", "history", "--json", "--state", state, "--project", PROJECT, "--stack", STACK])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)[0] == theirs
