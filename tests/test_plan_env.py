"""A service's env in the plan and the state: every value `[secret]` and encrypted, literal or read from the environment
(issue 19 item 3: literal values were stored in plaintext and printed by `up`)."""

from __future__ import annotations

import json
from pathlib import Path

from gpustack_iac.compile import compile_spec
from gpustack_iac.engine.embedded.engine import EmbeddedEngine
from gpustack_iac.engine.render.json import render_json
from gpustack_iac.engine.state import StateStore
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext

_TEXT = """\
type: fleet
name: here
backends: [local]
nodes: 1
---
type: gateway
name: gw
backend: local
default: true
---
type: service
name: web
port: 80
commands: [python3 app.py]
env:
  - ROLE=spiky
  - HF_TOKEN
resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
"""


def test_every_env_value_is_secret_literal_or_from_the_environment(tmp_path: Path) -> None:
    spec = load_text(_TEXT, file=str(tmp_path / "s.gpustack.yml"), env={"HF_TOKEN": "hf_very_secret"})
    compiled = compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path), hosts=[])
    engine = EmbeddedEngine("p", "dev", StateStore(tmp_path / "state", "p", "dev", passphrase="pw"))
    plan = json.loads(render_json(engine.preview(compiled.program)))
    [step] = [s for s in plan["steps"] if s["type"].endswith("ServiceRegistration")]
    [definition] = [d for d in step["diffs"] if d["path"] == "definition"]
    assert definition["secret"] is False
    assert definition["new"]["groups"][0]["env"] == {"ROLE": "[secret]", "HF_TOKEN": "[secret]"}
    assert "hf_very_secret" not in json.dumps(plan) and "spiky" not in json.dumps(plan)


def test_generations_are_not_kept_in_the_clear(tmp_path: Path) -> None:
    """A group's generation is an unkeyed hash over its env: in the clear, a short secret could be
    checked against guesses offline. The registration carries it as a secret, the recorded spec as a
    keyed fingerprint."""
    spec = load_text(_TEXT, file=str(tmp_path / "s.gpustack.yml"), env={"HF_TOKEN": "hf_short"})
    compiled = compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path), hosts=[])
    engine = EmbeddedEngine("p", "dev", StateStore(tmp_path / "state", "p", "dev", passphrase="pw"))
    text = render_json(engine.preview(compiled.program))
    plan = json.loads(text)
    [step] = [s for s in plan["steps"] if s["type"].endswith("ServiceRegistration")]
    [definition] = [d for d in step["diffs"] if d["path"] == "definition"]
    assert definition["new"]["generation"] == "[secret]"
    assert definition["new"]["groups"][0]["generation"] == "[secret]"
    service = compiled.definitions["web"]
    for generation in (service["generation"], service["groups"][0]["generation"]):
        assert generation not in text
        assert generation not in json.dumps(list(compiled.component_specs().values()))
