"""The embedded engine's fast paths keep its semantics: SDK shortcuts, struct decoding, byte-exact
file reads, group-committed journal appends, and resources declared while others are being applied."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from pathlib import Path

import pulumi
import pytest
from pulumi.output import UNKNOWN as SDK_UNKNOWN
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import rpc as sdk_rpc

from filestack import PROJECT, STACK, files_program, open_engine
from gpustack_iac.engine.embedded import sdk_hooks
from gpustack_iac.engine.wire import SECRET_SIG, SECRET_SIG_KEY as SIG_KEY
from gpustack_iac.engine.embedded.monitor import dict_to_struct, struct_to_dict
from gpustack_iac.engine.embedded.urn import make_urn
from gpustack_iac.engine.model import StepOp
from gpustack_iac.engine.state import ResourceState, StateStore
from gpustack_iac.providers.file import File

FILE_TYPE = "pulumi-python:dynamic/gpustack:File"


def test_urns_from_the_sdk_shortcut_equal_the_sdk_own(tmp_path: Path) -> None:
    parent = make_urn(STACK, PROJECT, "test:index:Box", "box")

    def program() -> None:
        # pulumi.create_urn is the SDK's own implementation; the runtime module's is our shortcut in a run.
        pulumi.export("sdk", pulumi.create_urn("n", "test:index:T", parent=parent))
        pulumi.export("fast", sdk_resource.create_urn("n", "test:index:T", parent))
        pulumi.export("sdk_top", pulumi.create_urn("n", "test:index:T"))
        pulumi.export("fast_top", sdk_resource.create_urn("n", "test:index:T"))
        f = File("f", path=str(tmp_path / "files" / "f"), content="x")
        pulumi.export("registered", f.urn)

    outputs = open_engine(tmp_path / "state").preview(program).outputs
    assert outputs["fast"] == outputs["sdk"] == f"urn:pulumi:{STACK}::{PROJECT}::test:index:Box$test:index:T::n"
    assert outputs["fast_top"] == outputs["sdk_top"] == f"urn:pulumi:{STACK}::{PROJECT}::test:index:T::n"
    assert outputs["registered"] == make_urn(STACK, PROJECT, FILE_TYPE, "f")


def test_sdk_debug_messages_still_reach_a_debug_logger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    program = files_program(tmp_path / "files", {"a.txt": "A"})
    engine = open_engine(tmp_path / "state")
    with caplog.at_level(logging.DEBUG, logger="gpustack_iac.engine.embedded"):
        engine.preview(program)
    assert any("registering resource" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gpustack_iac.engine.embedded"):
        engine.preview(program)
    assert not any("registering resource" in r.getMessage() for r in caplog.records)


def test_contains_unknowns_matches_the_sdk_inside_and_outside_a_run() -> None:
    looped: list[object] = [1]
    looped.append(looped)
    cases: list[tuple[object, bool]] = [
        ({"a": [1, {"b": SDK_UNKNOWN}]}, True),
        ({"a": [1, {"b": "x"}]}, False),
        (SDK_UNKNOWN, True),
        (looped, False),
        ("s", False),
    ]
    for value, expected in cases:
        assert sdk_rpc.contains_unknowns(value) is expected  # outside a run: the SDK's own
        assert sdk_hooks._has_unknowns(value, set()) is expected  # what a run uses


def test_struct_decoding_is_plain_json_with_ints() -> None:
    value = {"l": [1, 2.5, None, {"t": True, "e": {}}], "z": None, "s": "", "e": [], "neg": -3}
    assert struct_to_dict(dict_to_struct(value)) == value
    assert isinstance(struct_to_dict(dict_to_struct({"n": 4.0}))["n"], int)
    with pytest.raises(ValueError, match="no JSON representation"):
        struct_to_dict(dict_to_struct({"bad": math.inf}))


def test_file_contents_round_trip_byte_exact(tmp_path: Path) -> None:
    content = "line one\r\nline two\rend\n"
    program = files_program(tmp_path / "files", {"crlf.txt": content})
    engine = open_engine(tmp_path / "state")
    assert engine.up(program).ok
    on_disk = (tmp_path / "files" / "crlf.txt").read_bytes()
    assert on_disk == content.encode("utf-8")
    plan = engine.preview(program)
    assert not plan.has_changes  # no newline translation on the way back, so no phantom drift
    state = engine.store.load().get(make_urn(STACK, PROJECT, FILE_TYPE, "crlf.txt"))
    assert state is not None and state.outputs["sha256"] == hashlib.sha256(on_disk).hexdigest()


def test_parallel_journal_appends_are_all_kept_under_one_salt(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state", PROJECT, STACK, passphrase="pw")
    threads_n, per_thread = 8, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def writer(t: int) -> None:
        try:
            start.wait(timeout=60)
            for i in range(per_thread):
                res = ResourceState(
                    urn=make_urn(STACK, PROJECT, "test:index:R", f"r{t}-{i}"),
                    type="test:index:R",
                    custom=True,
                    id=f"id-{t}-{i}",
                    outputs={"token": {SIG_KEY: SECRET_SIG, "value": f"secret-{t}-{i}"}},
                )
                store.end(res.urn, res)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors and not any(th.is_alive() for th in threads)

    lines = store.journal_path.read_bytes().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    assert sum(r["kind"] == "secrets" for r in records) == 1  # the first secret created the salt, once
    assert b"secret-" not in store.journal_path.read_bytes()
    reread = StateStore(tmp_path / "state", PROJECT, STACK, passphrase="pw").load()
    tokens = {r.outputs["token"]["value"] for r in reread.resources}
    assert tokens == {f"secret-{t}-{i}" for t in range(threads_n) for i in range(per_thread)}


def test_resources_declared_while_others_apply_are_applied(tmp_path: Path) -> None:
    files = tmp_path / "files"

    def program() -> None:
        # Each file is declared only once the previous one exists: registrations keep arriving
        # after the program function itself has returned.
        def chain(i: int, _sha: str) -> None:
            if i < 4:
                nxt = File(f"c{i}", path=str(files / f"c{i}"), content=f"{i}")
                nxt.sha256.apply(lambda sha: chain(i + 1, sha))

        first = File("c0-root", path=str(files / "root"), content="root")
        first.sha256.apply(lambda sha: chain(1, sha))

    engine = open_engine(tmp_path / "state")
    result = engine.up(program)
    assert result.ok
    assert sorted(p.name for p in files.iterdir()) == ["c1", "c2", "c3", "root"]
    assert len([r for r in engine.store.load().resources if r.custom]) == 4
    again = engine.preview(program)
    assert all(s.op is StepOp.SAME for s in again.steps)


def test_refresh_journals_each_read_in_one_append(tmp_path: Path) -> None:
    files = tmp_path / "files"
    program = files_program(files, {"a.txt": "A", "b.txt": "B"})
    engine = open_engine(tmp_path / "state")
    assert engine.up(program).ok
    (files / "a.txt").write_text("changed outside")
    (files / "b.txt").unlink()
    plan = engine.refresh()
    assert {s.name for s in plan.steps} == {"a.txt", "b.txt"}
    state = engine.store.load()
    assert state.pending_operations == []
    a = state.get(make_urn(STACK, PROJECT, FILE_TYPE, "a.txt"))
    assert a is not None and a.outputs["content"] == "changed outside"
    assert state.get(make_urn(STACK, PROJECT, FILE_TYPE, "b.txt")) is None
