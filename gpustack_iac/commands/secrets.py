"""`gpustack-iac secret set/list/delete`: the stack's run secrets (`${{ secrets.NAME }}` in configurations)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gpustack_iac import workspace as ws
from gpustack_iac.commands.options import existing_stack_options
from gpustack_iac.errors import GpustackError


def _workspace(project: str | None, stack: str | None, state_dir: Path | None, engine: str) -> ws.Workspace:
    # A secret is often set before the first `up`: with --project, the stack need not exist yet.
    if project:
        return ws.existing(project, stack or ws.DEFAULT_STACK, state_dir, engine)  # type: ignore[arg-type]
    return ws.existing(None, stack, state_dir, engine)  # type: ignore[arg-type]


@click.group()
def secret() -> None:
    """Manage the stack's secrets, used in configurations as `${{ secrets.NAME }}`.

    Values are encrypted with the stack's secrets key and never printed; `env` and
    `registry_auth` entries that name them are filled in on the host, in the run's environment.

    \b
    Examples:
      gpustack-iac secret set HF_TOKEN --project llm      # prompts for the value
      printf %s "$TOKEN" | gpustack-iac secret set HF_TOKEN
      gpustack-iac secret list
      gpustack-iac secret delete HF_TOKEN
    """


@secret.command("set")
@click.argument("name")
@existing_stack_options
def secret_set(name: str, project: str | None, stack: str | None, state_dir: Path | None, engine: str) -> None:
    """Set a secret; the value is read from standard input (or prompted for, hidden), never an argument."""
    space = _workspace(project, stack, state_dir, engine)
    if sys.stdin.isatty():
        value = click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read()
        # A trailing newline from `echo` is not part of a token.
        value = value[:-1] if value.endswith("\n") else value
    if not value:
        raise GpustackError(f"no value for secret {name} (pipe it on standard input, or run in a terminal to be prompted)")
    created = space.run_secrets().set(name, value)
    click.echo(f"{'Created' if created else 'Updated'} secret {name} of stack {space.project}/{space.stack}.")


@secret.command("list")
@existing_stack_options
def secret_list(project: str | None, stack: str | None, state_dir: Path | None, engine: str) -> None:
    """List the names of the stack's secrets (never their values)."""
    space = _workspace(project, stack, state_dir, engine)
    for name in space.run_secrets().names():
        click.echo(name)


@secret.command("delete")
@click.argument("name")
@existing_stack_options
def secret_delete(name: str, project: str | None, stack: str | None, state_dir: Path | None, engine: str) -> None:
    """Delete a secret; a configuration that still names it then fails `plan`."""
    space = _workspace(project, stack, state_dir, engine)
    if not space.run_secrets().delete(name):
        raise GpustackError(f"stack {space.project}/{space.stack} has no secret {name}")
    click.echo(f"Deleted secret {name} of stack {space.project}/{space.stack}.")
