"""A secret nested in an input (one env value of a service definition) hides only itself:
literal values beside it, and every other property, stay value-level diffs in the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pulumi
from echostack import Echo
from filestack import open_engine

from gpustack_iac.engine.render.json import render_json


def _program(role: str, token: str, replicas: int) -> Callable[[], None]:
    def run() -> None:
        Echo("svc", {"definition": {"env": {"ROLE": role, "HF_TOKEN": pulumi.Output.secret(token)}, "replicas": replicas}})

    return run


def _diffs(plan: Any) -> dict[str, tuple[Any, Any, bool]]:
    """The property diffs of the resource as the JSON plan (what every renderer shows) has them."""
    step = next(s for s in json.loads(render_json(plan))["steps"] if s["name"] == "svc")
    return {d["path"]: (d["old"], d["new"], d["secret"]) for d in step["diffs"]}


def test_literal_env_changes_show_values_and_the_secret_stays_hidden(tmp_path: Path) -> None:
    engine = open_engine(tmp_path / "state")
    first = _diffs(engine.preview(_program("spiky", "tok-1", 1)))
    assert first["definition"][1]["env"] == {"ROLE": "spiky", "HF_TOKEN": "[secret]"}
    assert engine.up(_program("spiky", "tok-1", 1)).ok

    changed = _diffs(engine.preview(_program("calm", "tok-2", 2)))
    assert changed["definition.env.ROLE"] == ("spiky", "calm", False)
    assert changed["definition.replicas"] == (1, 2, False)
    assert changed["definition.env.HF_TOKEN"] == (None, None, True)
    assert "definition" not in changed

    only_literal = _diffs(engine.preview(_program("calm", "tok-1", 1)))
    assert set(only_literal) == {"definition.env.ROLE"}
    for p in (tmp_path / "state").rglob("*"):
        if p.is_file():
            assert b"tok-1" not in p.read_bytes()


def test_a_nested_secret_stays_encrypted_after_a_refresh(tmp_path: Path) -> None:
    engine = open_engine(tmp_path / "state")
    assert engine.up(_program("spiky", "tok-refresh", 1)).ok
    engine.refresh()
    [svc] = [r for r in engine.store.load().resources if r.urn.endswith("::svc")]
    assert svc.outputs["definition"]["env"]["HF_TOKEN"]["value"] == "tok-refresh"  # wrapped, in memory
    assert svc.outputs["definition"]["env"]["ROLE"] == "spiky"
    for p in (tmp_path / "state").rglob("*"):
        if p.is_file():
            assert b"tok-refresh" not in p.read_bytes()
