"""The options every stack command shares: which stack, where its state lives, which engine.

Kept apart from the commands so that each command module can use them without importing another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gpustack_iac import workspace as ws


def stack_options(f: Any) -> Any:
    f = click.option("--stack", "-s", default=None, help=f"Stack name (default: {ws.DEFAULT_STACK}).")(f)
    f = click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                     help=f"State directory (default: ./.gpustack/state, or ${ws.STATE_DIR_ENV}).")(f)
    f = click.option("--engine", type=click.Choice(["auto", "embedded", "pulumi"]), default="auto", show_default=True,
                     help="auto = the Pulumi CLI when it is on PATH, else the embedded engine.")(f)
    return f


def existing_stack_options(f: Any) -> Any:
    f = click.option("--project", "-p", default=None, help="Project name (default: the only one in the state directory).")(f)
    return stack_options(f)
