"""`plan`, `up`, `destroy`, `refresh`, `output` and `state`: the commands that work on a stack.

Errors are raised as typed exceptions; `gpustack_iac.cli` turns them into messages and exit codes.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from gpustack_iac.commands.abandon import abandon_failed, abandon_named, print_abandoned
from gpustack_iac.commands.liveview import LiveView
from gpustack_iac.commands.options import existing_stack_options, project_option, stack_options
from gpustack_iac.console import console as make_console

from gpustack_iac.compile import CompiledStack, compile_stack
from gpustack_iac.engine import planfile
from gpustack_iac.engine.model import ApplyResult, Plan, Step, StepResult
from gpustack_iac.engine.wire import is_secret, unwrap_secret
from gpustack_iac.engine.render.json import render_apply_json, render_json
from gpustack_iac.engine.render.markdown import render_apply_markdown, render_markdown
from gpustack_iac.engine.render.terminal import render_apply_terminal, render_terminal
from gpustack_iac.engine.state import StateStore
from gpustack_iac.plan_summary import specs_from_resources, summarize
from gpustack_iac.errors import EngineError, GpustackError
from gpustack_iac.spec.loader import Spec, load_paths
from gpustack_iac import workspace as ws

FORMATS = ("terminal", "markdown", "json")


class Aborted(GpustackError):
    """The user declined, or confirmation was needed where nobody can give it."""


class Interrupted(GpustackError):
    """Ctrl-C while applying."""

    exit_code = 130


@dataclass
class Prepared:
    workspace: ws.Workspace
    spec: Spec
    compiled: CompiledStack
    paths: list[Path]
    recursive: bool = False


# A shared option: plan and up read a directory's own files unless told to recurse.
RECURSIVE = click.option("--recursive", "-r", is_flag=True,
                         help="Also read the configuration files in subdirectories of a directory given.")


def prepare(paths: tuple[Path, ...], stack: str | None, state_dir: str | None, engine: str, offline: bool = False,
            recursive: bool = False, project: str | None = None) -> Prepared:
    """Load and compile. A directory is read alone, as Terraform and Pulumi do (a `prod/` and a `staging/`
    under it are other stacks), unless `recursive`."""
    path_list = list(paths) or [Path(".")]
    spec = load_paths(path_list, os.environ, recursive)
    space = ws.for_spec(spec, path_list, stack, state_dir, engine, project)  # type: ignore[arg-type]
    _resolve_secrets(spec, space)
    compiled = compile_stack(spec, space.project, space.stack, space.state_root, space.fingerprint_key, offline)
    return Prepared(space, spec, compiled, path_list, recursive)


def _resolve_secrets(spec: Spec, space: ws.Workspace) -> None:
    """`${{ secrets.NAME }}` from the stack's run secrets; read (and decrypted) only when referenced."""
    from gpustack_iac.spec import secretrefs

    if secretrefs.referenced_names(spec):
        secretrefs.resolve(spec, space.run_secrets().values(), space.stack)


def make_plan(prepared: Prepared, refresh: bool) -> Plan:
    space = prepared.workspace
    plan = space.engine().preview(prepared.compiled.program, refresh=refresh)
    store = space.store()
    old = specs_from_resources(store.load().resources) if store.exists() else {}
    plan.config_changes = summarize(old, prepared.compiled.component_specs())
    plan.cost = prepared.compiled.cost_of(old)
    plan.warnings = list(prepared.compiled.warnings) + list(plan.warnings)
    plan.hosts = list(prepared.compiled.hosts)
    plan.config_fingerprint = prepared.spec.fingerprint()
    plan.project = space.project
    plan.config_paths = [str(p.resolve()) for p in prepared.paths]
    plan.config_recursive = prepared.recursive
    return plan


def _emit_plan(plan: Plan, fmt: str, console: Console) -> None:
    if fmt == "json":
        click.echo(render_json(plan), nl=False)  # the renderers end their text with a newline
    elif fmt == "markdown":
        click.echo(render_markdown(plan), nl=False)
    else:
        render_terminal(plan, console)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@project_option
@stack_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True, help="Output format.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Save the plan for `up FILE`.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when nothing changes, 1 on error, 2 when there are changes.")
@click.option("--refresh/--no-refresh", default=True, show_default=True, help="Read real state back before planning.")
@RECURSIVE
@click.option("--offline", is_flag=True,
              help="Contact no host: no SSH fleet host is probed for its facts (placement is not checked), no refresh.")
def plan(paths: tuple[Path, ...], project: str | None, stack: str | None, state_dir: str | None, engine: str, fmt: str,
         out: Path | None, detailed_exitcode: bool, refresh: bool, recursive: bool, offline: bool) -> None:
    """Show what `up` would change.

    \b
    Examples:
      gpustack-iac plan examples/local
      gpustack-iac plan . --format markdown > plan.md
      gpustack-iac plan . -o plan.json --detailed-exitcode
    """
    console = make_console(stderr=fmt != "terminal")
    prepared = prepare(paths, stack, state_dir, engine, offline, recursive, project)
    with console.status("planning…") if sys.stderr.isatty() else nullcontext():
        result = make_plan(prepared, refresh and not offline)
    _emit_plan(result, fmt, console)
    if out is not None:
        planfile.save_plan(result, out)
        console.print(f"Plan saved to {out}; apply exactly it with: gpustack-iac up {out}")
    if detailed_exitcode and result.has_changes:
        # Not an error: terraform's convention for "the plan has changes".
        click.get_current_context().exit(2)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise Aborted("no terminal to confirm on; pass --yes to apply without a prompt")
    if not click.confirm(question, default=False):
        raise Aborted("cancelled; nothing was changed")


class _Progress:
    """Prints a line as each step starts and ends; `view` shows what a step running for over two
    seconds is doing meanwhile (liveview.py)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.finished: list[str] = []
        self.running: dict[str, str] = {}  # URN -> "create hello": steps started and not finished
        self.view = LiveView(console)

    def start(self, step: Step) -> None:
        if step.custom and step.changes:
            self.running[step.urn] = f"{step.op.value} {step.name}"
            self.view.step_started(step.urn, f"{step.op.symbol} {step.type} {step.name}")
            self.console.print(f"  [dim]…[/] {step.op.symbol} {step.type} {step.name}", highlight=False)

    def interrupted(self, what: str) -> GpustackError:
        """Ctrl-C: say what was applied; every finished step is journaled, so the state is consistent."""
        done = ", ".join(self.finished) or "nothing"
        cut = ", ".join(self.running.values())
        left = (f" Cut short: {cut}; what it started keeps running (a service's replicas keep starting under "
                "its controller, `gpustack-iac status` shows them)." if cut else "")
        return Interrupted(f"{what} interrupted; applied and recorded in the state: {done}.{left} The state is consistent "
                           "(a step cut short is recorded as pending and re-checked next time): run "
                           f"`gpustack-iac {what}` again to resume, or `gpustack-iac plan` to see what remains")

    def done(self, result: StepResult) -> None:
        step = result.step
        self.view.step_finished(step.urn)
        if result.ok:  # a step that failed as the interrupt ended its wait was cut short
            self.running.pop(step.urn, None)
        if not (step.custom and step.changes):
            return
        if result.ok:
            self.finished.append(f"{step.op.value} {step.name}")
        mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
        tail = f" ({result.seconds:.1f}s)" if result.ok else f": {result.error}"
        self.console.print(f"  {mark} {step.op.symbol} {step.type} {step.name}{tail}", highlight=False)


def _emit_apply(result: ApplyResult, fmt: str, console: Console) -> None:
    if fmt == "json":
        click.echo(render_apply_json(result), nl=False)
    elif fmt == "markdown":
        click.echo(render_apply_markdown(result), nl=False)
    else:
        render_apply_terminal(result, console)


def _is_plan_file(paths: tuple[Path, ...]) -> bool:
    return len(paths) == 1 and paths[0].is_file() and paths[0].suffix == ".json"


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@project_option
@stack_options
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True,
              help="Output format of the result.")
@click.option("--refresh/--no-refresh", default=True, show_default=True, help="Read real state back before planning.")
@click.option("--wait", is_flag=True, help="Wait for the stack's tasks to finish; exit 1 if one failed.")
@RECURSIVE
def up(paths: tuple[Path, ...], project: str | None, stack: str | None, state_dir: str | None, engine: str, yes: bool,
       fmt: str, refresh: bool, wait: bool, recursive: bool) -> None:
    """Apply the configuration (or a plan saved with `plan -o FILE`).

    \b
    Examples:
      gpustack-iac up examples/local --yes
      gpustack-iac up plan.json
    """
    console = make_console(stderr=fmt != "terminal")
    saved: Plan | None = None
    if _is_plan_file(paths):
        saved = planfile.load_plan(paths[0])
        prepared = prepare(tuple(Path(p) for p in saved.config_paths), stack or saved.stack, state_dir, engine,
                           recursive=saved.config_recursive, project=project or saved.project or None)
        if prepared.spec.fingerprint() != saved.config_fingerprint:
            from gpustack_iac.errors import PlanStaleError

            raise PlanStaleError(f"the configuration changed since {paths[0]} was made; run plan again")
        the_plan = saved
    else:
        prepared = prepare(paths, stack, state_dir, engine, recursive=recursive, project=project)
        _refuse_plugins_without_cli(prepared)
        the_plan = make_plan(prepared, refresh)
    if fmt == "terminal":
        render_terminal(the_plan, console)
    if not the_plan.has_changes:
        console.print("No changes.")
    else:
        _confirm("Apply these changes?", yes or saved is not None)
    progress = _Progress(console)
    try:
        with progress.view.showing():
            result = prepared.workspace.engine().up(prepared.compiled.program, plan=saved, on_step=progress.done,
                                                    refresh=refresh and saved is None, on_start=progress.start)
    except KeyboardInterrupt:
        raise progress.interrupted("up") from None
    _emit_apply(result, fmt, console)
    if not result.ok:
        failed = next(r for r in result.results if not r.ok)
        raise GpustackError(f"up failed at {failed.step.name}: {failed.error}; the state records what exists — "
                            "fix the cause and run up again")
    from gpustack_iac.commands import workloads

    if fmt == "terminal":
        _print_endpoint_hint(result.outputs, prepared.workspace, console)
        workloads.print_dev_hints(result.outputs, console)
    if wait and not workloads.wait_for_tasks(result.outputs, console):
        raise GpustackError("a task failed; see `gpustack-iac status` and `gpustack-iac logs TASK`")


def _refuse_plugins_without_cli(prepared: Prepared) -> None:
    """Cloud and Kubernetes resources are applied by their provider plugins, which only the Pulumi
    CLI runs: say so in one line before planning, rather than after a long plan."""
    from gpustack_iac.engine.embedded.engine import EmbeddedEngine

    backends = prepared.compiled.plugin_backends
    if backends and isinstance(prepared.workspace.engine(), EmbeddedEngine):
        raise EngineError(f"up on {', '.join(backends)} needs the Pulumi CLI to run the provider plugins: install it "
                          "(https://www.pulumi.com/docs/install/) and run again (`plan` works without it)")


def _print_endpoint_hint(outputs: dict[str, Any], space: ws.Workspace, console: Console) -> None:
    from gpustack_iac.commands.hints import endpoint_hint

    selector = ["--project", space.project, "--stack", space.stack]
    if space.state_url != f"file://{ws.default_state_dir()}":
        selector += ["--state", space.state_url]
    lines = endpoint_hint(outputs, selector)
    if lines:
        console.print(f"\n{lines[0]}", highlight=False)
    for line in lines[1:]:
        console.print(line, highlight=False, soft_wrap=True)


@click.command()
@existing_stack_options
@click.option("--yes", "-y", is_flag=True, help="Destroy without asking.")
@click.option("--force", is_flag=True, help="Drop from state each resource whose delete fails (its host is gone for "
                                            "good); the state records them as abandoned.")
def destroy(project: str | None, stack: str | None, state_dir: str | None, engine: str, yes: bool, force: bool) -> None:
    """Remove everything the stack deployed (shows what first).

    \b
    Examples:
      gpustack-iac destroy --yes
      gpustack-iac destroy --yes --force   # an SSH host is gone for good
    """
    console = make_console()
    # One rule for "nothing to destroy", whether no stack was ever made or it was emptied: exit 0.
    try:
        space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    except ws.NoStackError as exc:
        console.print(f"Nothing to destroy: {exc}", highlight=False)
        return
    resources = [r for r in space.store().load().resources if r.custom]
    if not resources:
        console.print(f"Stack {space.project}/{space.stack} has nothing deployed.")
        return
    console.print(f"Destroying stack [bold]{space.project}/{space.stack}[/] deletes {len(resources)} resources:")
    for res in reversed(resources):
        console.print(f"  - {res.type} {res.urn.rsplit('::', 1)[-1]}", highlight=False)
    from gpustack_iac.commands.workloads import volume_notes

    for note in volume_notes(resources):
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    _confirm("Destroy them?", yes)
    result = _destroy_once(space, console)
    abandoned = []
    # Each round abandons what failed, then deletes what that unblocked (the components above it).
    while force and not result.ok:
        dropped = abandon_failed(space.store(), result)
        if not dropped:
            break
        abandoned += dropped
        result = _destroy_once(space, console)
    print_abandoned(abandoned, console)
    if not result.ok:
        raise GpustackError("destroy did not finish; the state lists what still exists — run destroy again, or "
                            "`destroy --force` to abandon what cannot be deleted (its host is gone for good)")


def _destroy_once(space: ws.Workspace, console: Console) -> ApplyResult:
    progress = _Progress(console)
    try:
        with progress.view.showing():
            result = space.engine().destroy(on_step=progress.done, on_start=progress.start)
    except KeyboardInterrupt:
        raise progress.interrupted("destroy") from None
    render_apply_terminal(result, console)
    return result


@click.command()
@existing_stack_options
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when nothing drifted, 1 on error, 2 on drift (scheduled CI checks).")
def refresh(project: str | None, stack: str | None, state_dir: str | None, engine: str, detailed_exitcode: bool) -> None:
    """Read the real state of every resource back, record it, and report drift.

    \b
    Examples:
      gpustack-iac refresh      # after a reboot: shows the processes that are gone
      gpustack-iac refresh --detailed-exitcode --state s3://bucket/prefix   # a scheduled drift check
    """
    console = make_console()
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    result = space.engine().refresh()
    render_terminal(result, console)
    if detailed_exitcode and result.has_changes:
        click.get_current_context().exit(2)


@click.command()
@click.argument("name", required=False)
@existing_stack_options
@click.option("--show-secrets", is_flag=True, help="Print secret values instead of [secret].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def output(name: str | None, project: str | None, stack: str | None, state_dir: str | None, engine: str,
           show_secrets: bool, as_json: bool) -> None:
    """Print the stack's outputs (or one of them).

    \b
    Examples:
      gpustack-iac output endpoint
      gpustack-iac output token --show-secrets
    """
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    outputs = space.engine().outputs()

    def shown(value: Any) -> Any:
        if is_secret(value):
            return unwrap_secret(value) if show_secrets else "[secret]"
        if isinstance(value, dict):
            return {k: shown(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shown(v) for v in value]
        return value

    if name is not None:
        if name not in outputs:
            raise GpustackError(f"no output {name!r}; the stack has: {', '.join(sorted(outputs)) or 'none'}")
        value = shown(outputs[name])
        click.echo(json.dumps(value) if as_json or not isinstance(value, str) else value)
        return
    values = {k: shown(v) for k, v in sorted(outputs.items())}
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return
    for key, value in values.items():
        click.echo(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")


@click.group()
def state() -> None:
    """Inspect the stack's state, clear a stale lock, or restore a damaged checkpoint.

    \b
    Examples:
      gpustack-iac state list
      gpustack-iac state show hello
      gpustack-iac state unlock
      gpustack-iac state restore
      gpustack-iac state rm gpu-box-1   # its host is gone for good
    """


@state.command("list")
@existing_stack_options
def state_list(project: str | None, stack: str | None, state_dir: str | None, engine: str) -> None:
    """List the resources in state."""
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    checkpoint = space.store().load()
    for res in checkpoint.resources:
        flags = " [protected]" if res.protect else ""
        click.echo(f"{res.urn}{flags}")
    for op in checkpoint.pending_operations:
        click.echo(f"{op.resource.urn} [pending: {op.type}]")
    for gone in checkpoint.abandoned:
        click.echo(f"{gone.urn} [abandoned {gone.at}: {gone.reason}]")


@state.command("rm")
@click.argument("urn")
@existing_stack_options
def state_rm(urn: str, project: str | None, stack: str | None, state_dir: str | None, engine: str) -> None:
    """Drop one resource (by URN or name) from state without deleting it; the state records it as abandoned.

    For a resource whose host is gone for good. Nothing is contacted: what still exists must be
    removed by hand.

    \b
    Example:
      gpustack-iac state rm gpu-box-1
    """
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    print_abandoned(abandon_named(space.store(), urn), make_console())


@state.command("show")
@click.argument("urn")
@existing_stack_options
@click.option("--show-secrets", is_flag=True, help="Print secret values instead of [secret].")
def state_show(urn: str, project: str | None, stack: str | None, state_dir: str | None, engine: str, show_secrets: bool) -> None:
    """Show one resource (by URN or name) with its inputs and outputs."""
    from gpustack_iac.engine.render.common import mask_value

    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    checkpoint = space.store().load()
    matches = [r for r in checkpoint.resources if r.urn == urn or r.urn.rsplit("::", 1)[-1] == urn]
    if not matches:
        raise GpustackError(f"no resource {urn!r} in state; see `gpustack-iac state list`")
    for res in matches:
        body = {"urn": res.urn, "type": res.type, "id": res.id, "parent": res.parent, "protect": res.protect,
                "dependencies": res.dependencies, "inputs": _without_provider(res.inputs), "outputs": _without_provider(res.outputs)}
        click.echo(json.dumps(body if show_secrets else mask_value(body), indent=2, default=str))


def _without_provider(props: dict[str, Any]) -> dict[str, Any]:
    # The pickled dynamic provider is an implementation detail, long and unreadable.
    return {k: v for k, v in props.items() if k != "__provider"}


@state.command("unlock")
@existing_stack_options
@click.option("--force", is_flag=True, help="Clear the lock even if its owner cannot be checked (another host).")
def state_unlock(project: str | None, stack: str | None, state_dir: str | None, engine: str, force: bool) -> None:
    """Clear a stale lock, after checking its owner is gone.

    \b
    Example:
      gpustack-iac state unlock --stack dev
    """
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    store: StateStore = space.store()
    had_file = store.lock_path.exists()
    owner = store.unlock(force=force)
    if owner is None:
        # --force removes a lock file that cannot be read (empty, truncated) without an owner to name.
        click.echo(f"Removed an unreadable lock file ({store.lock_path})." if had_file else "The stack was not locked.")
        return
    click.echo(f"Cleared the lock of `{owner.operation}` held by pid {owner.pid} on {owner.host} since {owner.started_iso}.")


@state.command("restore")
@existing_stack_options
def state_restore(project: str | None, stack: str | None, state_dir: str | None, engine: str) -> None:
    """Put back the copy of the checkpoint written at the last compaction.

    For a checkpoint that is damaged, missing, or lost resources outside this tool (the commands
    that read it say so). The replaced file is kept beside it as `<stack>.json.damaged-<time>`;
    the journal of operations since the compaction still applies on top.

    \b
    Example:
      gpustack-iac state restore --stack dev
    """
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    store: StateStore = space.store()
    with store.lock("restore"):
        copy, aside = store.restore_backup()
    kept = f"; the replaced file is kept as {aside}" if aside else ""
    click.echo(f"Restored {store.describe()} from {copy}{kept}. Run `gpustack-iac plan` to check it against the configuration.")
