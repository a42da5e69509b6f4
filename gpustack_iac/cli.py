"""The command line. Each command is one function in the `main` group; later issues add more.

Errors: commands raise typed `GpustackError`s; `_Group.invoke` is the one place that turns them
into a message (no traceback) and the error's exit code.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gpustack_iac import __version__
from gpustack_iac.errors import ConfigError, GpustackError

if TYPE_CHECKING:
    from rich.console import Console


def _stderr() -> Console:
    from gpustack_iac.console import console  # rich, loaded only when there is something to print

    return console(stderr=True, highlight=False)


# Commands that live in their own modules (gpustack_iac/commands/), loaded on first use so that
# `validate`, `schema` and `--help` never import Pulumi or aiohttp. Each entry carries the first line
# of the command's docstring for the `--help` listing (tests/test_cli_light.py keeps them equal).
# Add a command here, or with `@main.command()` below.
_LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("gpustack_iac.commands.stack:plan", "Show what `up` would change."),
    "up": ("gpustack_iac.commands.stack:up", "Apply the configuration (or a plan saved with `plan -o FILE`)."),
    "destroy": ("gpustack_iac.commands.stack:destroy", "Remove everything the stack deployed (shows what first)."),
    "refresh": ("gpustack_iac.commands.stack:refresh", "Read the real state of every resource back, record it, and report drift."),
    "output": ("gpustack_iac.commands.stack:output", "Print the stack's outputs (or one of them)."),
    "state": ("gpustack_iac.commands.stack:state", "Inspect the stack's state, clear a stale lock, or restore a damaged checkpoint."),
    "status": ("gpustack_iac.commands.runtime:status",
               "Show hosts, services, replica groups and their replicas; tasks, dev environments and volumes."),
    "logs": ("gpustack_iac.commands.runtime:logs", "Print a service's replica logs, or a task's node logs."),
    "ssh": ("gpustack_iac.commands.workloads:ssh", "Open an SSH session in a dev environment (or run COMMAND there)."),
    "attach": ("gpustack_iac.commands.attach:attach", "Forward a running task's `ports` to localhost until Ctrl-C."),
    "secret": ("gpustack_iac.commands.secrets:secret", "Manage the stack's secrets, used in configurations as `${{ secrets.NAME }}`."),
    "stack": ("gpustack_iac.commands.stacks:stack_group", "List the stacks at the state location, show one's update history, or remove a destroyed one."),
    "offers": ("gpustack_iac.commands.offers:offers", "List instance types that fit a resource spec, cheapest first, with $/h."),
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LAZY_COMMANDS:
            module, _, attr = _LAZY_COMMANDS[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the short help strings above, without importing the commands."""
        rows = []
        for name in self.list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None:
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, _LAZY_COMMANDS[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Exit codes: 0 ok, 1 any error (usage errors too), 2 only for `plan --detailed-exitcode` changes.

        click gives usage errors 2 by default, which a CI job would read as "the plan has changes".
        """
        if standalone_mode is False:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            exc.show()
            sys.exit(1)
        except click.exceptions.Abort:
            # Ctrl-C outside an apply (up and destroy say what they applied themselves).
            click.echo("Interrupted. The state is consistent: every step that finished is recorded in it; "
                       "run `gpustack-iac plan` to see where things stand.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GpustackError as exc:
            console = _stderr()
            if isinstance(exc, ConfigError):
                count = len(exc.diagnostics)
                for diag in exc.diagnostics:
                    console.print(str(diag), markup=False, soft_wrap=True)
                console.print(f"[red]{count} error{'s' if count != 1 else ''}[/red]")
            elif str(exc):
                console.print(f"error: {exc}", markup=False, soft_wrap=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gpustack-iac")
def main() -> None:
    """Declarative GPU services: dstack-style YAML compiled to Pulumi stacks (README lists what deploys).

    \b
    Examples:
      gpustack-iac validate examples/
      gpustack-iac schema > gpustack.schema.json
    """


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check configuration files and show what they declare.

    PATHS are files or directories; directories are searched recursively for
    *.gpustack.yml, *.dstack.yml, .gpustack.yml and .dstack.yml (also .yaml).
    Exits 0 and prints a summary table, marking each document deployable by this
    version or not and why, or prints every error (file:line:column, property path,
    what was expected) and exits 1.

    \b
    Examples:
      gpustack-iac validate examples/
      gpustack-iac validate service.gpustack.yml fleet.gpustack.yml
      HF_TOKEN=... gpustack-iac validate llm.dstack.yml
    """
    from rich.table import Table

    from gpustack_iac.backends import not_deployable
    from gpustack_iac.console import console
    from gpustack_iac.spec.loader import load_paths
    from gpustack_iac.spec.models import ProjectConfig
    from gpustack_iac.spec.summary import summarize

    spec = load_paths(list(paths), os.environ)
    table = Table(title=f"{len(spec.documents())} documents in {len(spec.files)} files", title_justify="left")
    table.add_column("kind", style="cyan", no_wrap=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("groups / details")
    table.add_column("file", style="dim")
    table.add_column(f"deployable by {__version__}")
    for doc in spec.documents():
        row = summarize(doc)
        why = not_deployable(doc)
        deployable = "-" if isinstance(doc, ProjectConfig) else "yes" if why is None else f"[yellow]no[/]: {why}"
        table.add_row(row.kind, row.name, "\n".join(row.details), row.file, deployable)
    console(highlight=False).print(table)


@main.command()
@click.option("--indent", default=2, show_default=True, help="JSON indentation.")
def schema(indent: int) -> None:
    """Print the JSON Schema of the configuration files.

    Point your editor's YAML language server at it for completion and checks.

    \b
    Examples:
      gpustack-iac schema > gpustack.schema.json
      # then, first line of a configuration file:
      # yaml-language-server: $schema=./gpustack.schema.json
    """
    from gpustack_iac.spec.schema import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=indent) + "\n")
