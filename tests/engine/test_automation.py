"""The `pulumi` engine: translation of the CLI's engine events into plan steps, and the
missing-CLI error. The events are built with the SDK's own `EngineEvent.from_json` from the JSON
the CLI writes to its event log (apitype/events.go), one test per kind of step.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import EngineEvent, OpType
from rich.console import Console

from gpustack_iac.engine.automation import AutomationEngine
from gpustack_iac.engine.model import DiffKind, Plan, Step, StepOp, StepResult
from gpustack_iac.engine.pulumi_cli import INSTALL_HINT, MISSING_CLI_MESSAGE, require_cli
from gpustack_iac.engine.pulumi_diffs import parse_property_path
from gpustack_iac.engine.pulumi_events import EventTranslator, map_op
from gpustack_iac.engine.pulumi_plan_check import check_plan_current
from gpustack_iac.engine.render import render_json, render_markdown, render_terminal
from gpustack_iac.engine.wire import UNKNOWN as UNKNOWN_VALUE
from gpustack_iac.errors import EngineError, PlanStaleError

STACK = "dev"
ROOT = f"urn:pulumi:{STACK}::gpustack::pulumi:pulumi:Stack::gpustack-{STACK}"
PROVIDER = f"urn:pulumi:{STACK}::gpustack::pulumi:providers:pulumi-python::default::0"
FILE_TYPE = "pulumi-python:dynamic:Resource"


def urn(name: str, type_: str = FILE_TYPE) -> str:
    return f"urn:pulumi:{STACK}::gpustack::{type_}::{name}"


def state(name: str, inputs: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None,
          id_: str = "id-1", **extra: Any) -> dict[str, Any]:
    return {
        "type": extra.pop("type", FILE_TYPE),
        "urn": urn(name, extra.pop("urn_type", FILE_TYPE)),
        "id": id_,
        "parent": ROOT,
        "provider": PROVIDER,
        "custom": extra.pop("custom", True),
        "inputs": inputs or {},
        "outputs": outputs or {},
        **extra,
    }


def metadata(op: str, name: str, old: dict[str, Any] | None = None, new: dict[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"op": op, "urn": urn(name), "type": FILE_TYPE, "provider": PROVIDER}
    if old is not None:
        meta["old"] = old
    if new is not None:
        meta["new"] = new
    meta.update(extra)
    return meta


def event(kind: str, meta: dict[str, Any], seq: int = 1, **extra: Any) -> EngineEvent:
    body: dict[str, Any] = {"metadata": meta, **extra}
    return EngineEvent.from_json({"sequence": seq, "timestamp": 1_700_000_000 + seq, kind: body})


def pre(meta: dict[str, Any], seq: int = 1) -> EngineEvent:
    return event("resourcePreEvent", meta, seq, planning=True)


def outputs(meta: dict[str, Any], seq: int = 1) -> EngineEvent:
    return event("resOutputsEvent", meta, seq)


def translate(*events: EngineEvent) -> EventTranslator:
    t = EventTranslator()
    for e in events:
        t.handle(e)
    return t


def only_step(t: EventTranslator) -> Step:
    assert len(t.steps) == 1, t.steps
    return next(iter(t.steps.values()))


def test_every_pulumi_op_is_mapped() -> None:
    for op in OpType:
        assert isinstance(map_op(op.value), StepOp)
    with pytest.raises(EngineError, match="unknown step kind"):
        map_op("teleport")


def test_create_lists_inputs_hides_provider_and_marks_unknowns() -> None:
    new = state("web", inputs={"__provider": "gASV...", "path": "/tmp/a", "mode": 420.0, "url": UNKNOWN_VALUE},
                id_="")
    step = only_step(translate(pre(metadata("create", "web", new=new))))
    assert (step.op, step.name, step.type, step.custom, step.parent) == (StepOp.CREATE, "web", FILE_TYPE, True, ROOT)
    by_path = {d.path: d for d in step.diffs}
    assert set(by_path) == {"path", "mode", "url"}
    assert by_path["path"].kind is DiffKind.ADD and by_path["path"].new == "/tmp/a"
    assert by_path["url"].unknown and by_path["url"].new is None


def test_update_detailed_diff_nested_paths_secret_and_unknown() -> None:
    old = state("svc", inputs={"env": {"A": "1", "B": "x"}, "groups": [{"replicas": {"min": 1.0}}],
                               "token": "[secret]", "endpoint": "http://127.0.0.1:1/"})
    new = state("svc", inputs={"env": {"A": "2"}, "groups": [{"replicas": {"min": 2.0}}], "token": "[secret]",
                               "endpoint": UNKNOWN_VALUE, "labels": {"a.b": "c"}})
    detailed = {
        "env.A": {"diffKind": "update", "inputDiff": True},
        "env.B": {"diffKind": "delete", "inputDiff": True},
        "groups[0].replicas.min": {"diffKind": "update", "inputDiff": True},
        "token": {"diffKind": "update", "inputDiff": True},
        "endpoint": {"diffKind": "update", "inputDiff": False},
        'labels["a.b"]': {"diffKind": "add", "inputDiff": True},
    }
    meta = metadata("update", "svc", old=old, new=new, diffs=["env", "groups", "token", "endpoint", "labels"],
                    detailedDiff=detailed)
    step = only_step(translate(pre(meta)))
    assert step.op is StepOp.UPDATE
    d = {x.path: x for x in step.diffs}
    assert (d["env.A"].kind, d["env.A"].old, d["env.A"].new) == (DiffKind.UPDATE, "1", "2")
    assert (d["env.B"].kind, d["env.B"].old) == (DiffKind.DELETE, "x")
    assert (d["groups[0].replicas.min"].old, d["groups[0].replicas.min"].new) == (1.0, 2.0)
    assert d["token"].secret and d["token"].old is None and d["token"].new is None
    assert d["endpoint"].unknown and d["endpoint"].old == "http://127.0.0.1:1/"
    assert d['labels["a.b"]'].new == "c"


def test_update_without_detailed_diff_uses_top_level_keys() -> None:
    old = state("f", inputs={"content": "a", "mode": 420.0, "gone": 1.0})
    new = state("f", inputs={"content": "b", "mode": 420.0, "added": True})
    step = only_step(translate(pre(metadata("update", "f", old=old, new=new, diffs=["content", "gone", "added"]))))
    kinds = {d.path: d.kind for d in step.diffs}
    assert kinds == {"content": DiffKind.UPDATE, "gone": DiffKind.DELETE, "added": DiffKind.ADD}


def _replace_phases(order: list[str]) -> EventTranslator:
    old = state("host", inputs={"port": 22.0, "image": "a"})
    new = state("host", inputs={"port": 2222.0, "image": "a"}, id_="")
    detailed = {"port": {"diffKind": "update-replace", "inputDiff": True}}
    events = [
        pre(metadata(op, "host", old=old, new=new, keys=["port"], diffs=["port"], detailedDiff=detailed), seq=i)
        for i, op in enumerate(order)
    ]
    return translate(*events)


def test_replace_create_before_delete_merges_phases() -> None:
    step = only_step(_replace_phases(["create-replacement", "replace", "delete-replaced"]))
    assert step.op is StepOp.REPLACE and not step.delete_before_replace
    assert step.replace_reasons == ["port"]
    assert [(d.path, d.old, d.new, d.forces_replace) for d in step.diffs] == [("port", 22.0, 2222.0, True)]


def test_replace_delete_before_replace_is_detected_from_phase_order() -> None:
    step = only_step(_replace_phases(["delete-replaced", "replace", "create-replacement"]))
    assert step.op is StepOp.REPLACE and step.delete_before_replace


def test_delete_same_read_and_protect_flags() -> None:
    t = translate(
        pre(metadata("delete", "old", old=state("old", inputs={"a": 1.0}, protect=False, retainOnDelete=True))),
        pre(metadata("same", "keep", old=state("keep"), new=state("keep", protect=True))),
        pre(metadata("read", "ext", new=state("ext"))),
    )
    gone, keep, ext = (t.steps[urn(n)] for n in ("old", "keep", "ext"))
    assert (gone.op, gone.retain_on_delete, gone.diffs) == (StepOp.DELETE, True, [])
    assert (keep.op, keep.protect, keep.changes) == (StepOp.SAME, True, False)
    assert ext.op is StepOp.READ


def test_refresh_unchanged_vanished_and_drifted() -> None:
    t = translate(
        pre(metadata("refresh", "ok", old=state("ok", outputs={"x": 1.0}), new=state("ok", outputs={"x": 1.0}))),
        pre(metadata("refresh", "lost", old=state("lost", outputs={"x": 1.0}))),
        pre(metadata("refresh", "moved", old=state("moved", outputs={"x": 1.0, "__provider": "p"}),
                     new=state("moved", outputs={"x": 2.0, "__provider": "q"}))),
    )
    ok, lost, moved = (t.steps[urn(n)] for n in ("ok", "lost", "moved"))
    assert ok.op is StepOp.READ
    assert lost.op is StepOp.REFRESH_DRIFT and "no longer exists" in lost.detail
    assert moved.op is StepOp.REFRESH_DRIFT
    assert [(d.path, d.old, d.new) for d in moved.diffs] == [("x", 1.0, 2.0)]
    plan = t.plan(STACK)
    assert plan.count(StepOp.REFRESH_DRIFT) == 2


def test_refresh_phase_gives_way_to_the_planned_step() -> None:
    """preview --refresh: a vanished resource is read, then planned for re-creation."""
    new = state("lost", inputs={"path": "/tmp/x"}, id_="")
    t = translate(
        pre(metadata("refresh", "lost", old=state("lost", outputs={"path": "/tmp/x"}))),
        pre(metadata("create", "lost", new=new), seq=2),
    )
    step = only_step(t)
    assert step.op is StepOp.CREATE
    assert step.detail.startswith("refresh: ") and "no longer exists" in step.detail


@pytest.mark.parametrize(
    ("op", "expected", "detail"),
    [
        ("import", StepOp.CREATE, "imported"),
        ("discard", StepOp.DELETE, "left alone"),
        ("remove-pending-replace", StepOp.SAME, "pending replacement"),
        ("read-replacement", StepOp.READ, ""),
        ("discard-replaced", StepOp.REPLACE, ""),
        ("import-replacement", StepOp.REPLACE, ""),
    ],
)
def test_rarer_ops(op: str, expected: StepOp, detail: str) -> None:
    step = only_step(translate(pre(metadata(op, "r", old=state("r"), new=state("r")))))
    assert step.op is expected
    assert detail in step.detail


def test_components_are_not_counted() -> None:
    comp = state("llm", custom=False, type="gpustack:index:Service", id_="")
    meta = metadata("create", "llm", new=comp)
    meta["type"] = "gpustack:index:Service"
    t = translate(pre(meta), pre(metadata("create", "f", new=state("f", id_="")), seq=2))
    plan = t.plan(STACK)
    assert [s.custom for s in plan.steps] == [False, True]
    assert plan.count(StepOp.CREATE) == 1


def test_up_results_failures_callbacks_warnings_and_summary() -> None:
    started: list[str] = []
    finished: list[StepResult] = []
    t = EventTranslator(on_start=lambda s: started.append(s.name), on_step=finished.append)
    ok_meta = metadata("create", "a", new=state("a", inputs={"content": "x"}, id_=""))
    bad_meta = metadata("update", "b", old=state("b", inputs={"content": "1"}), new=state("b", inputs={"content": "2"}),
                        diffs=["content"])
    root_meta = {"op": "same", "urn": ROOT, "type": "pulumi:pulumi:Stack", "provider": "",
                 "new": {"type": "pulumi:pulumi:Stack", "urn": ROOT, "id": "", "parent": "", "provider": "",
                         "custom": False, "outputs": {"url": "http://127.0.0.1:9"}}}
    for e in [
        pre(ok_meta, 1),
        outputs(ok_meta, 2),
        pre(bad_meta, 3),
        EngineEvent.from_json({"sequence": 4, "timestamp": 0, "diagnosticEvent": {
            "urn": urn("b"), "message": "\x1b[31mpermission denied: /etc/x\x1b[0m\n", "color": "never",
            "severity": "error"}}),
        event("resOpFailedEvent", bad_meta, 5, status=1, steps=1),
        EngineEvent.from_json({"sequence": 6, "timestamp": 0, "diagnosticEvent": {
            "urn": urn("a"), "message": "mode is ignored on this platform", "color": "never",
            "severity": "warning"}}),
        pre(root_meta, 7),
        outputs(root_meta, 8),
        EngineEvent.from_json({"sequence": 9, "timestamp": 0, "summaryEvent": {
            "maybeCorrupt": False, "durationSeconds": 1, "resourceChanges": {"create": 1, "same": 1},
            "PolicyPacks": {}}}),
    ]:
        t.handle(e)
    assert started == ["a", "b"]
    assert [(r.step.name, r.ok) for r in finished] == [("a", True), ("b", False), (f"gpustack-{STACK}", True)]
    assert finished[1].error == "permission denied: /etc/x"
    assert t.warnings == ["a: mode is ignored on this platform"]
    assert t.summary == {"create": 1, "same": 1}
    assert t.outputs == {"url": "http://127.0.0.1:9"}
    result = t.apply_result(STACK, {})
    assert not result.ok


def test_finish_completes_steps_without_an_outputs_event() -> None:
    t = _replace_phases(["create-replacement", "replace", "delete-replaced"])
    t.finish()
    assert [(r.step.op, r.ok) for r in t.results.values()] == [(StepOp.REPLACE, True)]


def test_translated_plan_renders() -> None:
    t = _replace_phases(["delete-replaced", "replace", "create-replacement"])
    plan = t.plan(STACK)
    buf = io.StringIO()
    render_terminal(plan, Console(file=buf, width=120, color_system=None))
    text = buf.getvalue()
    assert "+- replace  pulumi-python:dynamic:Resource  host  (delete before replace; forced by: port)" in text
    assert "~ port: 22 → 2222 (forces replacement)" in text
    assert "Plan: 0 to create, 0 to update, 1 to replace, 0 to delete" in text
    assert '"engine": "pulumi"' in render_json(plan)
    assert "> [!WARNING]" in render_markdown(plan)


def test_plan_staleness() -> None:
    saved = _replace_phases(["create-replacement", "replace", "delete-replaced"]).plan(STACK)
    check_plan_current(saved, _replace_phases(["create-replacement", "replace", "delete-replaced"]).plan(STACK))
    fresh = translate(pre(metadata("delete", "host", old=state("host")))).plan(STACK)
    with pytest.raises(PlanStaleError, match="host was planned as replace, now delete"):
        check_plan_current(saved, fresh)
    with pytest.raises(PlanStaleError, match="was planned as no change, now create"):
        check_plan_current(Plan(stack=STACK), translate(pre(metadata("create", "n", new=state("n")))).plan(STACK))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a", ["a"]),
        ("a.b[0].c", ["a", "b", 0, "c"]),
        ('labels["a.b"]', ["labels", "a.b"]),
        ('m["q\\"x"][2]', ["m", 'q"x', 2]),
    ],
)
def test_property_paths(path: str, expected: list[str | int]) -> None:
    assert parse_property_path(path) == expected


def test_missing_cli_is_one_line_with_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError) as info:
        AutomationEngine(project="gpustack", stack=STACK, state_url=f"file://{tmp_path / 'state'}")
    message = str(info.value)
    assert message == MISSING_CLI_MESSAGE
    assert "\n" not in message
    assert INSTALL_HINT in message and "--engine embedded" in message
    assert not (tmp_path / "state").exists()  # nothing is written before the check
    with pytest.raises(EngineError):
        require_cli(path=str(tmp_path))


def test_missing_cli_in_a_fresh_process(tmp_path: Path) -> None:
    """The same check in a real interpreter whose PATH has no pulumi."""
    code = (
        "from gpustack_iac.engine.automation import AutomationEngine\n"
        "from gpustack_iac.errors import EngineError\n"
        "try:\n"
        "    AutomationEngine(project='p', stack='s')\n"
        "except EngineError as e:\n"
        "    print(e)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": str(tmp_path), "PYTHONPATH": str(repo), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == MISSING_CLI_MESSAGE


def test_matches_the_engine_protocol() -> None:
    """Same methods, parameter names and defaults as engine/base.py's Engine protocol."""
    import inspect

    from gpustack_iac.engine.base import Engine

    for name in ("preview", "up", "destroy", "refresh", "outputs", "export"):
        ours = inspect.signature(getattr(AutomationEngine, name))
        theirs = inspect.signature(getattr(Engine, name))
        assert [(p.name, p.default) for p in ours.parameters.values()] == [
            (p.name, p.default) for p in theirs.parameters.values()
        ], name
    params = inspect.signature(AutomationEngine.__init__).parameters
    assert {"project", "stack", "state_url", "passphrase"} <= set(params)


def test_passphrase_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpustack_iac.engine.automation import resolve_passphrase
    from gpustack_iac.errors import StateError

    for name in ("GPUSTACK_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    url = f"file://{tmp_path}"
    # A new local stack gets a generated passphrase in a 0600 file, reused afterwards.
    first = resolve_passphrase(None, url, STACK)
    secret_file = tmp_path / ".pulumi" / f"passphrase-{STACK}"
    assert secret_file.read_text().strip() == first
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert resolve_passphrase(None, url, STACK) == first
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-pulumi-var")
    assert resolve_passphrase(None, url, STACK) == "from-pulumi-var"
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "from-our-var")
    assert resolve_passphrase(None, "s3://bucket/state", STACK) == "from-our-var"
    assert resolve_passphrase("explicit", url, STACK) == "explicit"
    monkeypatch.delenv("GPUSTACK_PASSPHRASE")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE")
    with pytest.raises(StateError, match="set GPUSTACK_PASSPHRASE"):
        resolve_passphrase(None, "s3://bucket/state", STACK)
