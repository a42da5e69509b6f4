"""Plan and `up` result as a pull-request comment (GitHub-flavoured Markdown).

The hidden marker on the first line lets CI find its own comment and edit it instead of adding a
new one on every push. GitHub refuses comments above 65,536 characters, so a very large plan
drops its property diffs (they stay in the JSON plan file) rather than failing to post.
"""

from __future__ import annotations

import html
import re

from gpustack_iac.engine.model import ApplyResult, Plan, Step
from gpustack_iac.engine.render import common
from gpustack_iac.engine.render.cost import cost_lines

MAX_COMMENT_CHARS = 60_000
MARKER_PREFIX = "gpustack-iac-plan"


def marker(stack: str, project: str = "") -> str:
    """The hidden comment CI searches for: `<!-- gpustack-iac-plan:<project>/<stack> -->`.

    The project is part of it: two projects in one repository may both have a stack `dev`, and each
    must keep its own pull-request comment.
    """
    name = f"{project}/{stack}" if project else stack
    # "--" would end the HTML comment early; project and stack names never need it.
    return f"<!-- {MARKER_PREFIX}:{name.replace('--', '-')} -->"


def _code(text: str) -> str:
    """Inline code that survives backticks inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fenced(lines: list[str], lang: str) -> str:
    body = "\n".join(lines)
    longest = max((len(m) for m in re.findall(r"`{3,}", body)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{lang}\n{body}\n{fence}"


def _summary_html(step: Step) -> str:
    tags = common.step_tags(step)
    tail = f" ({html.escape('; '.join(tags))})" if tags else ""
    label = f"{step.op.symbol} {common.OP_LABELS[step.op]}"
    return (
        f"<code>{html.escape(label)}</code> <code>{html.escape(step.type)}</code> "
        f"<b>{html.escape(step.name)}</b>{tail}"
    )


def _step_block(step: Step, with_diffs: bool) -> str:
    lines = [common.diff_line(d) for d in common.shown_diffs(step)]
    if step.detail:
        lines.append(f"# {step.detail}")
    if not with_diffs or not lines:
        return f"- {_summary_html(step)}"
    return f"<details><summary>{_summary_html(step)}</summary>\n\n{_fenced(lines, 'diff')}\n\n</details>"


def _plan_markdown(plan: Plan, with_diffs: bool, max_steps: int | None) -> str:
    name = f"{plan.project}/{plan.stack}" if plan.project else plan.stack
    parts: list[str] = [marker(plan.stack, plan.project), f"### gpustack-iac plan: {_code(name)}", ""]
    parts.append(f"**{common.plan_summary_line(plan)}**")
    if plan.cost:
        parts += ["", f"💰 **Cost:** {html.escape(plan.cost['line'])}"]
    destructive = common.destructive_steps(plan)
    if destructive:
        parts += ["", "> [!WARNING]", f"> {common.destructive_sentence(plan)}"]
        for step in destructive:
            tags = common.step_tags(step)
            tail = f" ({'; '.join(tags)})" if tags else ""
            parts.append(f"> - {common.OP_LABELS[step.op]} {_code(step.type)} **{html.escape(step.name)}**{tail}")
    if plan.config_changes:
        parts += ["", "#### Configuration changes", ""]
        for change in plan.config_changes:
            flag = " — **disruptive**" if change.disruptive else ""
            parts.append(f"- {change.kind} {_code(change.name)}: {html.escape(change.summary)}{flag}")
    if plan.hosts:
        parts += ["", "#### Hosts", ""]
        parts += [f"- {html.escape(h)}" for h in plan.hosts]
    if plan.warnings:
        parts += ["", "#### Warnings", ""]
        parts += [f"- {html.escape(w)}" for w in plan.warnings]
    shown = common.visible_steps(plan.steps)
    if shown:
        parts += ["", f"#### Resource changes ({len(shown)})", ""]
        listed = shown if max_steps is None else shown[:max_steps]
        blocks = [_step_block(s, with_diffs) for s in listed]
        # Consecutive <details> blocks need a blank line between them to render as separate blocks.
        parts.append("\n\n".join(blocks) if with_diffs else "\n".join(blocks))
        if len(listed) < len(shown):
            parts += ["", f"… and {len(shown) - len(listed)} more steps (see the JSON plan file)."]
        if not with_diffs:
            parts += ["", "_Property diffs omitted to fit a comment; the JSON plan file has them._"]
    if plan.cost:
        lines = cost_lines(plan.cost)
        parts += ["", "<details><summary>Cost breakdown</summary>", "", _fenced(lines, ""), "", "</details>"]
    if plan.outputs:
        lines = common.output_lines(plan.outputs)
        parts += ["", f"<details><summary>Outputs ({len(lines)})</summary>", "", _fenced(lines, ""), "", "</details>"]
    meta = f"engine {plan.engine} · state serial {plan.state_serial}"
    if plan.config_fingerprint:
        meta += f" · config {plan.config_fingerprint[:12]}"
    parts += ["", f"<sub>{html.escape(meta)}</sub>", ""]
    return "\n".join(parts)


def render_markdown(plan: Plan) -> str:
    """A pull-request comment: marker, one-line summary, warning banner, details per step."""
    text = _plan_markdown(plan, with_diffs=True, max_steps=None)
    if len(text) <= MAX_COMMENT_CHARS:
        return text
    text = _plan_markdown(plan, with_diffs=False, max_steps=None)
    max_steps = len(plan.steps)
    while len(text) > MAX_COMMENT_CHARS and max_steps > 0:
        max_steps //= 2
        text = _plan_markdown(plan, with_diffs=False, max_steps=max_steps)
    return text


def render_apply_markdown(result: ApplyResult) -> str:
    """What `up` did, for a comment or a CI job summary."""
    icon = "✅" if result.ok else "❌"
    parts = [f"### {icon} gpustack-iac up: {_code(result.stack)}", "", f"**{common.apply_summary_line(result)}**"]
    changed = [r for r in result.results if r.step.changes or not r.ok]
    if changed:
        parts += ["", "| result | step | seconds |", "| --- | --- | ---: |"]
        for r in changed:
            cell = html.escape(common.step_heading(r.step)).replace("|", "\\|")
            parts.append(f"| {'ok' if r.ok else '**failed**'} | {cell} | {r.seconds:.1f} |")
    failures = [r for r in result.results if not r.ok and r.error]
    if failures:
        parts += ["", "#### Errors", ""]
        for r in failures:
            parts += [f"{_code(r.step.urn)}:", "", _fenced(r.error.splitlines(), ""), ""]
    if result.outputs:
        lines = common.output_lines(result.outputs)
        parts += ["", f"<details><summary>Outputs ({len(lines)})</summary>", "", _fenced(lines, ""), "", "</details>"]
    parts.append("")
    return "\n".join(parts)
