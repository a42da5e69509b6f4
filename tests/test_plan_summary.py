"""The configuration-level summary: what a reviewer reads first."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from gpustack_iac.plan_summary import summarize
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.service import Service

CTX = StackContext(project="p", stack="dev", state_root=Path("/nonexistent"), fingerprint_key=lambda: b"k" * 32)

SERVICE = """
type: service
name: llm
port: 8000
commands: [python3 serve.py]
env: [MODEL=small]
scaling: {metric: rps, target: 10}
replica_groups:
  - name: l40s-gpu
    replicas: 1..3
    resources: {gpu: L40S}
  - name: a100-gpu
    replicas: 1
    resources: {gpu: A100}
"""


def _spec(text: str = SERVICE) -> dict[str, Any]:
    service = load_text(text, env={}).services[0]
    return Service.spec_of(service.to_runtime(), CTX)


def _lines(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    before = {("service", "llm"): old} if old else {}
    after = {("service", "llm"): new} if new else {}
    return [f"{c.name}: {c.summary}" + (" !" if c.disruptive else "") for c in summarize(before, after)]


def test_new_service_lists_its_groups() -> None:
    # The scaling rules say where the burst path overrides scale_up_delay.
    assert _lines(None, _spec()) == [
        "llm: new service: l40s-gpu ×1..3, a100-gpu ×1; scaling rps target 10, up after 300s (bursts at once), down after 600s"
    ]


def test_unchanged_service_has_no_lines() -> None:
    assert _lines(_spec(), _spec()) == []


def test_replica_range_change_is_in_place() -> None:
    new = _spec(SERVICE.replace("replicas: 1..3", "replicas: 2..4"))
    assert _lines(_spec(), new) == ["llm/l40s-gpu: replicas 1..3 → 2..4 (in place)"]


def test_commands_change_is_a_rolling_update_of_every_group() -> None:
    new = _spec(SERVICE.replace("serve.py", "serve.py --v2"))
    assert _lines(_spec(), new) == [
        "llm/l40s-gpu: commands changed → rolling update, 1..3 replicas !",
        "llm/a100-gpu: commands changed → rolling update, 1 replica !",
    ]


def test_env_change_is_seen_without_the_value() -> None:
    new = _spec(SERVICE.replace("MODEL=small", "MODEL=large"))
    lines = _lines(_spec(), new)
    assert lines[0] == "llm/l40s-gpu: env changed → rolling update, 1..3 replicas !"
    assert "large" not in repr(new) and "small" not in repr(_spec())


def test_new_and_removed_groups() -> None:
    old = _spec()
    new = copy.deepcopy(old)
    new["groups"] = [old["groups"][0], {**old["groups"][1], "name": "h100-gpu"}]
    assert _lines(old, new) == [
        "llm/h100-gpu: new group h100-gpu (replicas 1)",
        "llm/a100-gpu: group a100-gpu removed → 1 replicas stop !",
    ]


def test_scaling_change_is_in_place() -> None:
    new = _spec(SERVICE.replace("target: 10", "target: 20"))
    assert _lines(_spec(), new) == ["llm: scaling rps target 10 → rps target 20 (in place)"]


def test_removed_service_is_disruptive() -> None:
    assert _lines(_spec(), None) == ["llm: removed → l40s-gpu ×1..3, a100-gpu ×1 stop !"]
