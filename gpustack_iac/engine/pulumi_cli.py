"""Facts about the `pulumi` CLI shared by the Automation API engine and its event translation:
the engine's name, how to find the executable (with an install hint when it is missing), and how
to strip the CLI's colour markup from the messages it writes.
"""

from __future__ import annotations

import re
import shutil

from gpustack_iac.errors import EngineError

ENGINE_NAME = "pulumi"
INSTALL_HINT = "curl -fsSL https://get.pulumi.com | sh"
MISSING_CLI_MESSAGE = (
    f"the pulumi CLI is not on PATH: install it with `{INSTALL_HINT}` "
    "(https://www.pulumi.com/docs/install/) or use `--engine embedded`"
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m|<\{%[a-z]+%\}>")


def require_cli(path: str | None = None) -> str:
    """The `pulumi` executable on PATH (or `path`), else EngineError with how to install it."""
    found = shutil.which("pulumi", path=path)
    if found is None:
        raise EngineError(MISSING_CLI_MESSAGE)
    return found


def clean_message(message: str) -> str:
    return _ANSI.sub("", message).strip()
