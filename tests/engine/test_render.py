"""Golden and behaviour tests for the plan / apply renderers (terminal, Markdown, JSON)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from gpustack_iac.engine.model import (
    ApplyResult,
    ConfigChange,
    DiffKind,
    Plan,
    PropertyDiff,
    Step,
    StepOp,
    StepResult,
)
from gpustack_iac.engine.render import (
    marker,
    render_apply_json,
    render_apply_markdown,
    render_apply_terminal,
    render_json,
    render_markdown,
    render_terminal,
)
from gpustack_iac.engine.wire import SECRET_SIG as SECRET_SIG_VALUE
from gpustack_iac.engine.wire import SECRET_SIG_KEY
from gpustack_iac.engine.wire import UNKNOWN as UNKNOWN_VALUE
from gpustack_iac.engine.render.markdown import MAX_COMMENT_CHARS

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GPUSTACK_UPDATE_GOLDEN") == "1"
STACK = "dev"
PREFIX = f"urn:pulumi:{STACK}::gpustack::"


def _urn(qualified_type: str, name: str) -> str:
    return f"{PREFIX}{qualified_type}::{name}"


def full_plan() -> Plan:
    """One plan with every kind of step the renderers must show."""
    group_urn = _urn("gpustack:index:ReplicaGroup", "llm-a100-gpu")
    return Plan(
        stack=STACK,
        project="gpustack",
        config_paths=["examples/local/service.yml", "examples/local/fleet.yml"],
        engine="embedded",
        config_fingerprint="3f1c9a7b2e4d5f60718293a4b5c6d7e8f9012345",
        state_serial=7,
        config_changes=[
            ConfigChange("fleet", "gpu-fleet", "nodes 1..2 → 1..4 (in place)"),
            ConfigChange("gateway", "main", "unchanged endpoint, admin token rotated", disruptive=False),
            ConfigChange("service", "llm", "image changed → rolling update, 3 replicas", disruptive=True),
            ConfigChange("group", "llm/l40s-gpu", "replicas 1..3 → 2..4 (in place)"),
            ConfigChange("group", "llm/a100-gpu", "new group a100-gpu"),
            ConfigChange("group", "llm/cpu", "group removed → 1 replica stopped", disruptive=True),
        ],
        steps=[
            Step(
                urn=_urn("pulumi:pulumi:Stack", "gpustack-dev"),
                type="pulumi:pulumi:Stack",
                name="gpustack-dev",
                op=StepOp.SAME,
                custom=False,
            ),
            Step(
                urn=_urn("gpustack:local:Volume", "models"),
                type="gpustack:local:Volume",
                name="models",
                op=StepOp.SAME,
            ),
            Step(
                urn=group_urn,
                type="gpustack:index:ReplicaGroup",
                name="llm-a100-gpu",
                op=StepOp.CREATE,
                custom=False,
            ),
            Step(
                urn=_urn("gpustack:index:ReplicaGroup$gpustack:local:Replica", "llm-a100-gpu-0"),
                type="gpustack:local:Replica",
                name="llm-a100-gpu-0",
                op=StepOp.CREATE,
                parent=group_urn,
                diffs=[
                    PropertyDiff("commands", DiffKind.ADD, new=["python3 -m vllm.entrypoints.openai.api_server"]),
                    PropertyDiff("env.MODEL", DiffKind.ADD, new="meta-llama/Llama-3.1-8B-Instruct"),
                    PropertyDiff("gpus", DiffKind.ADD, new=[0, 1]),
                    PropertyDiff("url", DiffKind.ADD, unknown=True),
                ],
            ),
            Step(
                urn=_urn("gpustack:controller:Registration", "llm"),
                type="gpustack:controller:Registration",
                name="llm",
                op=StepOp.UPDATE,
                diffs=[
                    PropertyDiff("groups[0].replicas.min", DiffKind.UPDATE, old=1, new=2),
                    PropertyDiff("groups[0].replicas.max", DiffKind.UPDATE, old=3, new=4),
                    PropertyDiff("token", DiffKind.UPDATE, secret=True),
                    PropertyDiff("env.DEBUG", DiffKind.DELETE, old="1"),
                    PropertyDiff("endpoint", DiffKind.UPDATE, old="http://127.0.0.1:8080/services/llm", unknown=True),
                ],
            ),
            Step(
                urn=_urn("gpustack:local:Gateway", "main"),
                type="gpustack:local:Gateway",
                name="main",
                op=StepOp.UPDATE,
                protect=True,
                diffs=[PropertyDiff("labels", DiffKind.UPDATE, old={"tier": "a"}, new={"tier": "b", "zone": "eu"})],
            ),
            Step(
                urn=_urn("gpustack:local:Replica", "llm-l40s-gpu-0"),
                type="gpustack:local:Replica",
                name="llm-l40s-gpu-0",
                op=StepOp.REPLACE,
                replace_reasons=["image"],
                diffs=[
                    PropertyDiff(
                        "image", DiffKind.UPDATE, old="vllm/vllm-openai:v0.5", new="vllm/vllm-openai:v0.6",
                        forces_replace=True,
                    ),
                ],
            ),
            Step(
                urn=_urn("gpustack:ssh:Host", "gpu-box-1"),
                type="gpustack:ssh:Host",
                name="gpu-box-1",
                op=StepOp.REPLACE,
                delete_before_replace=True,
                replace_reasons=["port"],
                diffs=[PropertyDiff("port", DiffKind.UPDATE, old=22, new=2222, forces_replace=True)],
            ),
            Step(
                urn=_urn("gpustack:local:Replica", "llm-cpu-0"),
                type="gpustack:local:Replica",
                name="llm-cpu-0",
                op=StepOp.DELETE,
                retain_on_delete=True,
                detail="not declared in the configuration any more",
            ),
        ],
        warnings=[
            "service llm: group cpu removed; its traffic moves to the remaining groups",
            "gpu-box-1 is deleted before its replacement is created: expect downtime",
        ],
        outputs={
            "gateway_url": "http://127.0.0.1:8080",
            "llm_endpoint": UNKNOWN_VALUE,
            "admin_token": "[secret]",
        },
    )


def apply_result() -> ApplyResult:
    plan = full_plan()
    by_name = {s.name: s for s in plan.steps}
    return ApplyResult(
        stack=STACK,
        results=[
            StepResult(by_name["models"], ok=True, seconds=0.0),
            StepResult(by_name["llm-a100-gpu"], ok=True, seconds=0.0),
            StepResult(by_name["llm-a100-gpu-0"], ok=True, seconds=2.5),
            StepResult(by_name["llm"], ok=True, seconds=0.25),
            StepResult(
                by_name["gpu-box-1"], ok=False, seconds=30.0,
                error="ssh 127.0.0.1:2222: connection refused\nafter 3 attempts",
            ),
        ],
        outputs={
            "gateway_url": "http://127.0.0.1:8080",
            "admin_token": {SECRET_SIG_KEY: SECRET_SIG_VALUE, "value": "adm-plaintext-do-not-print"},
        },
    )


def terminal_text(render, obj, width: int = 100) -> str:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    # _environ={}: NO_COLOR, COLUMNS, TERM... of the machine running the tests must not matter.
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, no_color=True, _environ={})
    render(obj, console)
    return buf.getvalue()


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with GPUSTACK_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs (GPUSTACK_UPDATE_GOLDEN=1 regenerates it)"


@pytest.mark.parametrize(
    ("name", "produce"),
    [
        ("plan.txt", lambda: terminal_text(render_terminal, full_plan())),
        ("plan.md", lambda: render_markdown(full_plan())),
        ("plan.json", lambda: render_json(full_plan())),
        ("apply.txt", lambda: terminal_text(render_apply_terminal, apply_result())),
        ("apply.md", lambda: render_apply_markdown(apply_result())),
        ("apply.json", lambda: render_apply_json(apply_result())),
    ],
)
def test_golden(name: str, produce) -> None:  # type: ignore[no-untyped-def]
    check_golden(name, produce())


def test_terminal_layout_order_and_counts() -> None:
    text = terminal_text(render_terminal, full_plan())
    config = text.index("Configuration changes")
    resources = text.index("Resource changes")
    summary = text.index("Plan: 1 to create, 2 to update, 2 to replace, 1 to delete")
    assert config < resources < summary
    # `same` steps are hidden; components are shown but not counted.
    assert "models" not in text
    assert "+ create  gpustack:index:ReplicaGroup  llm-a100-gpu  (component)" in text
    assert "+- replace  gpustack:local:Replica  llm-l40s-gpu-0  (create before delete; forced by: image)" in text
    assert "(delete before replace; forced by: port)" in text
    assert "~ groups[0].replicas.min: 1 → 2" in text
    assert "~ token: [secret]" in text
    assert "+ url: (known after apply)" in text
    assert '~ endpoint: "http://127.0.0.1:8080/services/llm" → (known after apply)' in text
    assert "(protected)" in text
    assert "llm_endpoint: (known after apply)" in text


def test_terminal_colour_console_styles_ops_but_keeps_text() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system="standard", force_terminal=True, no_color=False, _environ={})
    render_terminal(full_plan(), console)
    coloured = buf.getvalue()
    assert "\x1b[" in coloured
    plain = re.sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert plain == terminal_text(render_terminal, full_plan())


def test_rich_markup_in_names_is_printed_literally() -> None:
    plan = Plan(
        stack=STACK,
        steps=[Step(urn="u", type="gpustack:local:File", name="[bold]x[/bold]", op=StepOp.CREATE,
                    diffs=[PropertyDiff("content", DiffKind.ADD, new="[red]hi[/red]")])],
    )
    text = terminal_text(render_terminal, plan)
    assert "[bold]x[/bold]" in text
    assert '"[red]hi[/red]"' in text


def test_secret_values_never_rendered() -> None:
    leak = "s3cr3t-plaintext-value"
    plan = full_plan()
    # An engine that wrongly keeps the values of a secret diff must still not leak them.
    plan.steps[4].diffs.append(PropertyDiff("password", DiffKind.UPDATE, old=leak, new=leak + "2", secret=True))
    plan.outputs["wrapped"] = {SECRET_SIG_KEY: SECRET_SIG_VALUE, "value": leak}
    plan.outputs["nested"] = {"a": [{SECRET_SIG_KEY: SECRET_SIG_VALUE, "value": leak}]}
    rendered = [terminal_text(render_terminal, plan), render_markdown(plan), render_json(plan)]
    result = apply_result()
    rendered += [terminal_text(render_apply_terminal, result), render_apply_markdown(result), render_apply_json(result)]
    for text in rendered:
        assert leak not in text
        assert "adm-plaintext-do-not-print" not in text
        assert "[secret]" in text


def test_markdown_marker_banner_and_details() -> None:
    text = render_markdown(full_plan())
    assert text.splitlines()[0] == "<!-- gpustack-iac-plan:gpustack/dev -->" == marker("dev", "gpustack")
    # Two projects with a stack of the same name keep one comment each.
    assert marker("dev", "infra-a") != marker("dev", "infra-b")
    assert "**Plan: 1 to create, 2 to update, 2 to replace, 1 to delete**" in text
    assert "> [!WARNING]" in text
    assert "> This plan replaces 2 resources and deletes 1 resource." in text
    assert text.count("<details>") == text.count("</details>") >= 5
    assert "```diff\n~ image: \"vllm/vllm-openai:v0.5\" → \"vllm/vllm-openai:v0.6\" (forces replacement)\n```" in text


def test_markdown_no_banner_without_destruction() -> None:
    plan = Plan(stack="prod", steps=[Step(urn="u", type="gpustack:local:File", name="f", op=StepOp.CREATE)])
    text = render_markdown(plan)
    assert "[!WARNING]" not in text
    assert "**Plan: 1 to create, 0 to update, 0 to replace, 0 to delete**" in text
    assert marker("prod") in text


def test_markdown_no_changes() -> None:
    plan = Plan(stack="prod", steps=[Step(urn="u", type="gpustack:local:File", name="f", op=StepOp.SAME)])
    assert "No changes." in render_markdown(plan)
    assert "No changes." in terminal_text(render_terminal, plan)
    assert json.loads(render_json(plan))["summary"]["has_changes"] is False


def test_markdown_backticks_and_html_in_values_cannot_break_out() -> None:
    plan = Plan(
        stack="dev",
        steps=[Step(urn="u", type="gpustack:local:File", name="<img src=x>", op=StepOp.UPDATE,
                    diffs=[PropertyDiff("content", DiffKind.UPDATE, old="a", new="```\n</details>")])],
    )
    text = render_markdown(plan)
    assert "<img src=x>" not in text
    assert "&lt;img src=x&gt;" in text
    # The diff body is fenced with more backticks than it contains.
    assert "````diff" in text


def test_markdown_huge_plan_fits_a_comment() -> None:
    steps = [
        Step(urn=f"u{i}", type="gpustack:local:File", name=f"file-{i}", op=StepOp.CREATE,
             diffs=[PropertyDiff("content", DiffKind.ADD, new="x" * 200)])
        for i in range(3000)
    ]
    plan = Plan(stack="big", steps=steps)
    text = render_markdown(plan)
    assert len(text) <= MAX_COMMENT_CHARS
    assert text.startswith(marker("big"))
    assert "**Plan: 3000 to create, 0 to update, 0 to replace, 0 to delete**" in text
    assert "more steps (see the JSON plan file)" in text


def test_json_is_stable_and_counts_custom_only() -> None:
    doc = json.loads(render_json(full_plan()))
    assert list(doc)[:2] == ["format_version", "kind"]
    assert doc["format_version"] == 1
    summary = doc["summary"]
    assert (summary["create"], summary["update"], summary["replace"], summary["delete"]) == (1, 2, 2, 1)
    assert summary["destructive"] is True
    token = next(d for d in doc["steps"][4]["diffs"] if d["path"] == "token")
    assert token["secret"] is True and token["old"] is None and token["new"] is None
    assert render_json(full_plan()) == render_json(full_plan())


def test_apply_summaries() -> None:
    result = apply_result()
    text = terminal_text(render_apply_terminal, result)
    assert "Failed: 1 created, 1 updated, 1 failed" in text
    assert "connection refused" in text
    ok = ApplyResult(stack=STACK, results=[StepResult(full_plan().steps[3], ok=True, seconds=1.0)])
    assert "Applied: 1 created" in render_apply_markdown(ok)
    doc = json.loads(render_apply_json(result))
    assert doc["ok"] is False and doc["summary"]["failed"] == 1 and doc["summary"]["create"] == 1


def test_refresh_plan_shows_reads_and_drift() -> None:
    plan = Plan(
        stack=STACK,
        steps=[
            Step(urn="u1", type="gpustack:local:File", name="kept", op=StepOp.READ),
            Step(urn="u2", type="gpustack:local:File", name="gone", op=StepOp.REFRESH_DRIFT,
                 detail="the resource no longer exists"),
            Step(urn="u3", type="gpustack:local:File", name="edited", op=StepOp.REFRESH_DRIFT,
                 diffs=[PropertyDiff("content", DiffKind.UPDATE, old="a", new="b")]),
        ],
    )
    text = terminal_text(render_terminal, plan)
    assert "> read  gpustack:local:File  kept" in text
    assert "! drift  gpustack:local:File  gone" in text and "the resource no longer exists" in text
    assert '~ content: "a" → "b"' in text
    assert "Plan: 0 to create, 0 to update, 0 to replace, 0 to delete, 2 drifted" in text
    assert json.loads(render_json(plan))["summary"]["drift"] == 2


def test_an_added_object_is_shown_one_leaf_per_line_and_scalar_lists_stay_whole() -> None:
    from gpustack_iac.engine.model import DiffKind, PropertyDiff, Step, StepOp
    from gpustack_iac.engine.render.common import diff_line, shown_diffs

    step = Step(urn="urn:x", type="t", name="n", op=StepOp.CREATE, diffs=[
        PropertyDiff("definition", DiffKind.ADD, new={"port": 8000, "groups": [{"name": "base", "gpus": [0, 1]}]}),
        PropertyDiff("token", DiffKind.ADD, new={"a": 1}, secret=True),
    ])
    assert [diff_line(d) for d in shown_diffs(step)] == [
        '+ definition.groups[0].gpus: [0, 1]',
        '+ definition.groups[0].name: "base"',
        "+ definition.port: 8000",
        "+ token: [secret]",
    ]
    component = Step(urn="urn:c", type="gpustack:index:Service", name="c", op=StepOp.CREATE, custom=False,
                     diffs=step.diffs)
    assert shown_diffs(component) == []
