"""Saved plans: exact round trip through a real file, and clear refusals of bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpustack_iac.engine.model import ConfigChange, DiffKind, Plan, PropertyDiff, Step, StepOp
from gpustack_iac.engine.planfile import load_plan, save_plan
from gpustack_iac.engine.render import render_json
from gpustack_iac.errors import PlanFileError

GOLDEN_PLAN = Path(__file__).parent / "golden" / "plan.json"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
names = st.text(min_size=1, max_size=20)


@st.composite
def diffs(draw: st.DrawFn) -> PropertyDiff:
    secret = draw(st.booleans())
    return PropertyDiff(
        path=draw(names),
        kind=draw(st.sampled_from(list(DiffKind))),
        # The model's contract: a secret diff carries no values.
        old=None if secret else draw(json_values),
        new=None if secret else draw(json_values),
        forces_replace=draw(st.booleans()),
        secret=secret,
        unknown=draw(st.booleans()),
    )


@st.composite
def steps(draw: st.DrawFn) -> Step:
    return Step(
        urn=draw(names),
        type=draw(names),
        name=draw(names),
        op=draw(st.sampled_from(list(StepOp))),
        custom=draw(st.booleans()),
        parent=draw(st.none() | names),
        diffs=draw(st.lists(diffs(), max_size=3)),
        replace_reasons=draw(st.lists(names, max_size=2)),
        delete_before_replace=draw(st.booleans()),
        protect=draw(st.booleans()),
        retain_on_delete=draw(st.booleans()),
        detail=draw(st.text(max_size=20)),
    )


plans = st.builds(
    Plan,
    stack=names,
    steps=st.lists(steps(), max_size=4),
    config_changes=st.lists(st.builds(ConfigChange, kind=names, name=names, summary=st.text(), disruptive=st.booleans()),
                            max_size=3),
    warnings=st.lists(st.text(max_size=30), max_size=3),
    outputs=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    config_fingerprint=st.text(max_size=40),
    state_serial=st.integers(0, 2**40),
    engine=st.sampled_from(["embedded", "pulumi"]),
    project=st.text(max_size=10),
    config_paths=st.lists(st.text(max_size=20), max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans)
def test_round_trip_is_exact(plan: Plan, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    assert load_plan(path) == plan


def test_golden_plan_file_loads_and_renders_identically(tmp_path: Path) -> None:
    plan = load_plan(GOLDEN_PLAN)
    assert plan.stack == "dev" and plan.state_serial == 7 and len(plan.steps) == 9
    assert render_json(plan) == GOLDEN_PLAN.read_text(encoding="utf-8")
    copy = tmp_path / "copy.json"
    save_plan(plan, copy)
    assert copy.read_bytes() == GOLDEN_PLAN.read_bytes()


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("old contents")
    save_plan(Plan(stack="dev"), path)
    assert load_plan(path).stack == "dev"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _valid_doc() -> dict[str, Any]:
    plan = Plan(stack="dev", steps=[Step(urn="u", type="t", name="n", op=StepOp.CREATE,
                                         diffs=[PropertyDiff("a", DiffKind.ADD, new=1)])])
    return json.loads(render_json(plan))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(format_version=2), "format_version 2 is not supported"),
        (lambda d: d.update(kind="something-else"), "kind: expected 'gpustack-iac/plan'"),
        (lambda d: d.pop("steps"), "steps: missing"),
        (lambda d: d["steps"][0].update(op="explode"), "steps[0].op: 'explode' is not one of"),
        (lambda d: d["steps"][0]["diffs"][0].update(kind="grow"), "steps[0].diffs[0].kind"),
        (lambda d: d["steps"][0].update(custom="yes"), "steps[0].custom: expected a boolean"),
        (lambda d: d.update(state_serial=True), "state_serial: expected an integer, got a boolean"),
        (lambda d: d.update(warnings=[1]), "warnings[0]: expected a string"),
        (lambda d: d.update(config_paths="infra/"), "config_paths: expected a list"),
        (lambda d: d.update(project=None), "project: expected a string"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(tmp_path: Path, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    doc = _valid_doc()
    mutate(doc)
    with pytest.raises(PlanFileError) as info:
        load_plan(_write(tmp_path, doc))
    assert expected in str(info.value)
    assert str(tmp_path / "plan.json") in str(info.value)


def test_fields_added_later_in_version_1_are_optional(tmp_path: Path) -> None:
    doc = _valid_doc()
    del doc["project"], doc["config_paths"]
    plan = load_plan(_write(tmp_path, doc))
    assert (plan.project, plan.config_paths) == ("", [])


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    text = render_json(Plan(stack="dev"))
    with pytest.raises(PlanFileError, match="invalid JSON"):
        load_plan(_write(tmp_path, text[: len(text) // 2]))
    with pytest.raises(PlanFileError, match="cannot read the plan"):
        load_plan(tmp_path / "absent.json")
    with pytest.raises(PlanFileError, match="cannot write the plan"):
        save_plan(Plan(stack="dev"), tmp_path / "no-such-dir" / "plan.json")


def test_non_json_values_are_refused_on_save(tmp_path: Path) -> None:
    plan = Plan(stack="dev", outputs={"bad": float("nan")})
    with pytest.raises(PlanFileError, match="not JSON"):
        save_plan(plan, tmp_path / "plan.json")
    assert not (tmp_path / "plan.json").exists()
