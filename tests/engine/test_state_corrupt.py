"""Damaged state: one message naming the file and the recovery, never a traceback, never a second deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpustack_iac.engine.wire import wrap_secret as secret
from gpustack_iac.engine.state import PendingOperation, ResourceState, StateStore
from gpustack_iac.errors import StateError

REPO = Path(__file__).resolve().parents[2]
PROJECT = "local"  # examples/local's project name, so the CLI finds this state for that configuration
STACK = "dev"
PREFIX = f"urn:pulumi:{STACK}::{PROJECT}::"
ROOT_URN = PREFIX + "pulumi:pulumi:Stack::local-dev"


@pytest.fixture(autouse=True)
def _no_ambient_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUSTACK_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)


def _deployed(root: Path, hosts: int = 2) -> StateStore:
    """A compacted state with a root stack and `hosts` resources, as an `up` leaves it."""
    store = StateStore(root, PROJECT, STACK)
    resources = [ResourceState(urn=ROOT_URN, type="pulumi:pulumi:Stack", custom=False)]
    for i in range(hosts):
        resources.append(
            ResourceState(
                urn=f"{PREFIX}gpustack:local:Host::h{i}", type="gpustack:local:Host", custom=True, id=f"id{i}",
                inputs={"name": f"h{i}"}, outputs={"name": f"h{i}"}, parent=ROOT_URN,
            )
        )
    for res in resources:
        store.begin(PendingOperation(res, "creating"))
        store.end(res.urn, res)
    store.compact()
    return store


GARBAGE: list[tuple[str, bytes, str]] = [
    ("binary", bytes(range(256)) * 4, "not UTF-8 text"),
    ("truncated", b'{"version": 3, "checkpoint": {"latest": {"resources": [', "not valid JSON"),
    ("empty", b"", "not valid JSON"),
    ("a-list", b"[1, 2]", "a JSON list where a checkpoint object was expected"),
    ("old-version", b'{"version": 1}', "checkpoint version 1"),
    ("checkpoint-str", b'{"version": 3, "checkpoint": "x"}', "checkpoint is a JSON str, not an object"),
    ("latest-list", b'{"version": 3, "checkpoint": {"latest": []}}', "checkpoint.latest is a JSON list"),
    ("resources-str", b'{"version": 3, "checkpoint": {"latest": {"resources": "x"}}}', "resources is not a list of objects"),
    ("resource-no-urn", b'{"version": 3, "checkpoint": {"latest": {"resources": [{"type": "t"}]}}}', "resources[0] has no urn or type"),
    ("pending-bad", b'{"version": 3, "checkpoint": {"latest": {"pending_operations": [{"type": "creating"}]}}}', "pending_operations[0] has no resource"),
    ("salt-number", b'{"version": 3, "checkpoint": {"latest": {"secrets_providers": {"type": "passphrase", "state": {"salt": 3}}}}}', "salt is not a string"),
    ("serial-str", b'{"version": 3, "checkpoint": {}, "gpustack": {"serial": "x"}}', "gpustack.serial is 'x'"),
    ("deep", b"[" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("data", "why"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_a_damaged_checkpoint_is_one_message_with_the_recovery(tmp_path: Path, data: bytes, why: str) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    store.dir.mkdir(parents=True)
    store.path.write_bytes(data)
    with pytest.raises(StateError) as info:
        store.load()
    message = str(info.value)
    assert f"the state file {store.path} is damaged (" in message and why in message, message
    assert "There is no copy" in message and f"move {store.path} aside" in message
    assert "\n" not in message


def test_each_compaction_keeps_a_copy_that_state_restore_puts_back(tmp_path: Path) -> None:
    store = _deployed(tmp_path)
    assert store.backup_path.read_bytes() == store.path.read_bytes()
    store.path.write_bytes(os.urandom(512))
    with pytest.raises(StateError) as info:
        store.load()
    assert f"{store.backup_path} (serial 1, 3 resources)" in str(info.value)
    assert "gpustack-iac state restore" in str(info.value)
    copy, aside = store.restore_backup()
    assert copy == store.backup_path and aside is not None and aside.exists()
    assert len(StateStore(tmp_path, PROJECT, STACK).load().resources) == 3


def test_the_journal_still_applies_on_top_of_a_restored_copy(tmp_path: Path) -> None:
    store = _deployed(tmp_path, hosts=1)
    extra = ResourceState(urn=f"{PREFIX}gpustack:local:Host::late", type="gpustack:local:Host", custom=True, id="late", parent=ROOT_URN)
    store.begin(PendingOperation(extra, "creating"))
    store.end(extra.urn, extra)  # journaled, not compacted: a crash right after
    store.path.write_bytes(b"\x00garbage")
    store.restore_backup()
    urns = [r.urn for r in StateStore(tmp_path, PROJECT, STACK).load().resources]
    assert extra.urn in urns and len(urns) == 3


def test_resources_removed_outside_the_tool_are_refused_not_planned_again(tmp_path: Path) -> None:
    store = _deployed(tmp_path)
    doc = json.loads(store.path.read_text())
    doc["checkpoint"]["latest"]["resources"] = []
    store.path.write_text(json.dumps(doc))
    with pytest.raises(StateError) as info:
        StateStore(tmp_path, PROJECT, STACK).load()
    message = str(info.value)
    assert "lacks 3 resources" in message and "deploy them a second time" in message
    assert "gpustack-iac state restore" in message and f"delete {store.backup_path}" in message
    store.restore_backup()
    assert len(StateStore(tmp_path, PROJECT, STACK).load().resources) == 3


def test_an_intended_removal_is_accepted_once_the_copy_is_deleted(tmp_path: Path) -> None:
    store = _deployed(tmp_path)
    doc = json.loads(store.path.read_text())
    doc["checkpoint"]["latest"]["resources"] = doc["checkpoint"]["latest"]["resources"][:1]
    store.path.write_text(json.dumps(doc))
    store.backup_path.unlink()
    assert len(StateStore(tmp_path, PROJECT, STACK).load().resources) == 1


def test_a_destroy_is_not_mistaken_for_vanished_resources(tmp_path: Path) -> None:
    store = _deployed(tmp_path)
    for res in reversed(store.load().resources):
        store.begin(PendingOperation(res, "deleting"))
        store.end(res.urn, None)
    store.compact()
    assert StateStore(tmp_path, PROJECT, STACK).load().resources == []


def test_a_missing_checkpoint_beside_its_copy_is_refused(tmp_path: Path) -> None:
    store = _deployed(tmp_path)
    store.path.unlink()
    with pytest.raises(StateError, match="is missing.*state restore"):
        StateStore(tmp_path, PROJECT, STACK).load()


def test_a_damaged_journal_is_one_message(tmp_path: Path) -> None:
    store = _deployed(tmp_path, hosts=1)
    store.journal_path.write_bytes(b"\xff\xfe\x00garbage\n" * 3)
    with pytest.raises(StateError, match=f"the state journal {store.journal_path} is damaged .*refresh"):
        StateStore(tmp_path, PROJECT, STACK).load()
    store.journal_path.write_bytes(b'{"kind":"header","serial":1}\n[1]\n')
    with pytest.raises(StateError, match="line 2 is not a record"):
        StateStore(tmp_path, PROJECT, STACK).load()


def test_a_first_append_torn_by_a_crash_is_ignored(tmp_path: Path) -> None:
    store = _deployed(tmp_path, hosts=1)
    store.journal_path.write_bytes(b'{"kind":"hea')
    assert len(StateStore(tmp_path, PROJECT, STACK).load().resources) == 2


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPUSTACK_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE")}
    return subprocess.run(
        [sys.executable, "-m", "gpustack_iac", *args, "--state-dir", str(state)],
        cwd=REPO, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_plan_status_and_state_list_on_a_garbage_checkpoint_say_one_line(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    store.dir.mkdir(parents=True)
    store.path.write_bytes(os.urandom(4096))
    for args in (("plan", "examples/local"), ("status",), ("state", "list"), ("destroy", "--yes")):
        _one_line_error(_cli(*args, state=tmp_path), f"error: the state file {store.path} is damaged", "move")


def test_cli_refuses_vanished_resources_and_state_restore_recovers(tmp_path: Path) -> None:
    store = _deployed(tmp_path)
    doc = json.loads(store.path.read_text())
    doc["checkpoint"]["latest"]["resources"] = []
    store.path.write_text(json.dumps(doc))
    _one_line_error(_cli("plan", "examples/local", state=tmp_path), "deploy them a second time", "state restore")
    restored = _cli("state", "restore", state=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "Restored" in restored.stdout
    listed = _cli("state", "list", state=tmp_path)
    assert listed.returncode == 0 and "gpustack:local:Host::h1" in listed.stdout, listed.stderr


@pytest.mark.slow  # seven CLI runs
def test_a_deleted_checkpoint_is_found_by_its_copy_never_nothing_to_destroy(tmp_path: Path) -> None:
    """Issue 19 item 2: with `<stack>.json` gone and its `.bak` present, `destroy` must not say "Nothing to
    destroy" and exit 0 while everything runs; stack discovery sees the copy, and `state restore` finds the
    stack without --project/--stack."""
    store = _deployed(tmp_path)
    store.path.unlink()
    for args in (("destroy", "--yes"), ("status",), ("state", "list")):
        _one_line_error(_cli(*args, state=tmp_path), f"the state file {store.path} is missing", "state restore")
    restored = _cli("state", "restore", state=tmp_path)
    assert restored.returncode == 0, restored.stderr
    listed = _cli("state", "list", state=tmp_path)
    assert listed.returncode == 0 and "gpustack:local:Host::h1" in listed.stdout, listed.stderr


def test_a_damaged_passphrase_file_is_one_message(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    (tmp_path / ".pulumi").mkdir(parents=True)
    (tmp_path / ".pulumi" / f"passphrase-{STACK}").write_bytes(b"\xff\xfe\x00")
    res = ResourceState(urn=f"{PREFIX}t::r", type="t", custom=True, id="1", inputs={"s": secret("v")})
    with pytest.raises(StateError, match="passphrase file .* is damaged"):
        store.begin(PendingOperation(res, "creating"))
