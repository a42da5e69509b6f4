"""`stack ls` and `stack rm`: the stacks at a state location, and removing one that is done with."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from gpustack_iac import workspace as ws
from gpustack_iac.commands.options import existing_stack_options
from gpustack_iac.errors import GpustackError


@click.group("stack")
def stack_group() -> None:
    """List the stacks at the state location, show one's update history, or remove a destroyed one.

    \b
    Examples:
      gpustack-iac stack ls --state s3://my-bucket/gpustack
      gpustack-iac stack rm --project infra --stack pr-42
      gpustack-iac stack history
    """


@stack_group.command("ls")
@existing_stack_options
def stack_ls(project: str | None, stack: str | None, state_dir: str | None, engine: str) -> None:
    """List every stack at the state location with how many resources it holds."""
    url, found = ws.all_stacks(state_dir)
    rows = [(p, s) for p, s in found if project in (None, p) and stack in (None, s)]
    if not rows:
        click.echo(f"No stack at {ws.shown_url(url)}.")
        return
    for p, s in rows:
        count = ws.Workspace(p, s, url, engine).store().deployed()  # type: ignore[arg-type]
        click.echo(f"{p}/{s}\t{f'{count} resources' if count else 'empty (destroyed)'}")


@stack_group.command("rm")
@existing_stack_options
@click.option("--force", is_flag=True, help="Remove the state even though it still records resources (they are abandoned).")
def stack_rm(project: str | None, stack: str | None, state_dir: str | None, engine: str, force: bool) -> None:
    """Remove a stack's state: only a destroyed or empty stack, unless --force.

    \b
    Example:
      gpustack-iac stack rm --project infra --stack pr-42
    """
    if not project or not stack:
        raise GpustackError("name the stack to remove with --project and --stack (`gpustack-iac stack ls` lists them)")
    url, found = ws.all_stacks(state_dir)
    if (project, stack) not in found:
        raise GpustackError(f"no stack {project}/{stack} at {ws.shown_url(url)}")
    store = ws.Workspace(project, stack, url, engine).store()  # type: ignore[arg-type]
    with store.lock("stack rm"):
        resources = [r for r in store.load().resources if r.custom]
        if resources and not force:
            raise GpustackError(
                f"stack {project}/{stack} still records {len(resources)} resources: run `gpustack-iac destroy "
                f"--project {project} --stack {stack}` first, or remove it with --force (they are then abandoned, "
                "still running and no longer managed)"
            )
        store.remove()
    for res in resources:
        click.echo(f"abandoned: {res.type} {res.urn.rsplit('::', 1)[-1]} (id {res.id})")
    click.echo(f"Removed stack {project}/{stack} from {ws.shown_url(url)}.")


@stack_group.command("history")
@existing_stack_options
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON (Pulumi's `stack history --json` fields).")
def stack_history(project: str | None, stack: str | None, state_dir: str | None, engine: str, as_json: bool) -> None:
    """List the stack's updates, newest first: what ran, when, how it ended, what it changed.

    The records are Pulumi's (`.pulumi/history/<project>/<stack>/`): `pulumi stack history` reads the
    same files, and this command reads what Pulumi's CLI wrote.

    \b
    Example:
      gpustack-iac stack history --state s3://my-bucket/gpustack
    """
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    records = space.store().history()
    if as_json:
        click.echo(json.dumps([json.loads(r.to_json()) for r in records], indent=2))
        return
    if not records:
        click.echo(f"No updates recorded for {space.project}/{space.stack}.")
        return
    for r in records:
        when = datetime.fromtimestamp(r.start_time, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        changes = ", ".join(f"{op} {n}" for op, n in sorted(r.resource_changes.items())) or "no resources"
        click.echo(f"{when}\t{r.kind}\t{r.result}\t{r.end_time - r.start_time}s\tversion {r.version}\t{changes}")
