"""The options every stack command shares: which stack, where its state lives, which engine.

Kept apart from the commands so that each command module can use them without importing another.
"""

from __future__ import annotations

from typing import Any

import click

from gpustack_iac import workspace as ws


def stack_options(f: Any) -> Any:
    f = click.option("--stack", "-s", default=None, help=f"Stack name (default: {ws.DEFAULT_STACK}).")(f)
    # One parameter for both spellings: a directory is a file:// location.
    f = click.option("--state", "--state-dir", "state_dir", default=None, metavar="URL",
                     help="State location: a directory, file://DIR, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, "
                          "azblob://CONTAINER/PREFIX or postgres://... (default: the configuration's project "
                          f"state, else ${ws.STATE_ENV}, else ${ws.STATE_DIR_ENV}, else ./.gpustack/state).")(f)
    f = click.option("--engine", type=click.Choice(["auto", "embedded", "pulumi"]), default="auto", show_default=True,
                     help="auto = the Pulumi CLI when it is on PATH, else the embedded engine.")(f)
    return f


def project_option(f: Any) -> Any:
    """`--project` for the commands that read configuration (plan, up)."""
    return click.option("--project", "-p", default=None,
                        help="Project name (default: the `type: project` document's `name`, else the name of the "
                             "directory of the first configuration path).")(f)


def existing_stack_options(f: Any) -> Any:
    f = click.option("--project", "-p", default=None, help="Project name (default: the only one in the state directory).")(f)
    return stack_options(f)
