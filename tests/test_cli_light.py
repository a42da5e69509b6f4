"""A light front door: `--help` lists every command without importing Pulumi or aiohttp."""

from __future__ import annotations

import importlib
import subprocess
import sys

from gpustack_iac.cli import _LAZY_COMMANDS, main

_PROBE = """
import sys
from click.testing import CliRunner
from gpustack_iac.cli import main
result = CliRunner().invoke(main, ["--help"])
assert result.exit_code == 0, result.output
print(result.output)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pulumi", "aiohttp", "grpc"))
print("HEAVY:", ",".join(heavy))
"""


def test_help_imports_neither_pulumi_nor_aiohttp() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.rstrip().endswith("HEAVY:"), out.splitlines()[-1]
    for name, (_, short) in _LAZY_COMMANDS.items():
        assert f"{name}" in out and short[:30] in out


def test_the_listed_short_help_is_the_commands_own() -> None:
    for name, (target, short) in _LAZY_COMMANDS.items():
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert (command.help or "").strip().splitlines()[0] == short, name
    assert set(_LAZY_COMMANDS) <= set(main.list_commands(None))  # type: ignore[arg-type]
