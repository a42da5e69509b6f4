"""The consoles the CLI prints with: on a terminal they wrap at its width; piped into a file, a CI
log or another program they never wrap, so a URL, a command, an id or a value stays on one line."""

from __future__ import annotations

import os

from rich.console import Console

# Wide enough that nothing wraps; tables still only take the width their cells need.
UNWRAPPED_WIDTH = 10_000


def console(stderr: bool = False, highlight: bool = True) -> Console:
    out = Console(stderr=stderr, highlight=highlight)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=highlight, width=UNWRAPPED_WIDTH)
    return out
