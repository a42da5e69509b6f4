"""Plan and `up` result for a terminal, through rich (colour when the console has it)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from gpustack_iac.engine.model import ApplyResult, DiffKind, Plan, Step, StepOp
from gpustack_iac.engine.render import common
from gpustack_iac.engine.render.cost import cost_lines

OP_STYLES: dict[StepOp, str] = {
    StepOp.SAME: "dim",
    StepOp.CREATE: "green",
    StepOp.UPDATE: "yellow",
    StepOp.REPLACE: "magenta",
    StepOp.DELETE: "red",
    StepOp.READ: "cyan",
    StepOp.REFRESH_DRIFT: "bold red",
}
DIFF_STYLES: dict[DiffKind, str] = {DiffKind.ADD: "green", DiffKind.DELETE: "red", DiffKind.UPDATE: "yellow"}


def _line(console: Console, text: Text | str = "") -> None:
    # highlight=False: rich would otherwise colour numbers and quotes inside user values.
    console.print(text, highlight=False)


def _heading(console: Console, title: str) -> None:
    _line(console)
    _line(console, Text(title, style="bold"))


def _step(console: Console, step: Step) -> None:
    text = Text("  ")
    text.append(common.step_heading(step), style=OP_STYLES[step.op])
    _line(console, text)
    for diff in common.shown_diffs(step):
        line = Text("      ")
        line.append(common.diff_line(diff), style="bold red" if diff.forces_replace else DIFF_STYLES[diff.kind])
        _line(console, line)
    if step.detail:
        _line(console, Text(f"      {step.detail}", style="dim"))


def render_terminal(plan: Plan, console: Console) -> None:
    """Print a plan: config-level summary, resource steps with property diffs, warnings, totals."""
    _line(console, Text(f"Plan for stack {plan.stack} (engine: {plan.engine})", style="bold"))
    if plan.config_changes:
        _heading(console, "Configuration changes")
        for change in plan.config_changes:
            mark = "!" if change.disruptive else "*"
            text = Text(f"  {mark} {change.kind} {change.name}: ", style="bold" if change.disruptive else "")
            text.append(change.summary, style="yellow" if change.disruptive else "")
            _line(console, text)
    shown = common.visible_steps(plan.steps)
    if shown:
        _heading(console, "Resource changes")
        for step in shown:
            _step(console, step)
    if plan.warnings:
        _heading(console, "Warnings")
        for warning in plan.warnings:
            _line(console, Text(f"  ! {warning}", style="yellow"))
    if plan.outputs:
        _heading(console, "Outputs")
        for line in common.output_lines(plan.outputs):
            _line(console, Text(f"  {line}"))
    if plan.cost:
        _heading(console, "Cost (per hour)")
        for line in cost_lines(plan.cost):
            _line(console, Text(f"  {line}"))
    _line(console)
    style = "bold red" if plan.destructive else "bold"
    _line(console, Text(common.plan_summary_line(plan), style=style))
    if plan.cost:
        _line(console, Text(f"Cost: {plan.cost['line']}", style="bold"))


def render_apply_terminal(result: ApplyResult, console: Console) -> None:
    """Print what `up` / `destroy` did, step by step, then the totals and outputs."""
    _line(console, Text(f"Update of stack {result.stack}", style="bold"))
    changed = [r for r in result.results if r.step.changes or not r.ok]
    if changed:
        _heading(console, "Resources")
        for r in changed:
            text = Text("  ")
            text.append(common.result_heading(r), style=OP_STYLES[r.step.op] if r.ok else "bold red")
            _line(console, text)
            if r.error:
                for err_line in r.error.splitlines():
                    _line(console, Text(f"        {err_line}", style="red"))
    if result.outputs:
        _heading(console, "Outputs")
        for line in common.output_lines(result.outputs):
            _line(console, Text(f"  {line}"))
    _line(console)
    _line(console, Text(common.apply_summary_line(result), style="bold" if result.ok else "bold red"))
