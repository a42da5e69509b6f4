"""docs/cli.md stays in step with the click command tree, and the commands the docs show exist."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gpustack_iac.cli import main as cli_main
from gpustack_iac.commands.clidocs import CommandDoc, is_stale, render, walk

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = ROOT / "docs" / "cli.md"
# The pages whose examples this task owns; each `gpustack-iac ...` in their code must parse.
CHECKED_PAGES = ("cli.md", "architecture.md", "operations.md", "workloads.md")
# Commands a user must find documented whatever the walker does (lazy ones and a group's subcommands).
EXPECTED = {"plan", "up", "destroy", "refresh", "output", "status", "logs", "validate", "schema",
            "state", "state list", "state show", "state unlock", "ssh"}


def _sections(page: str) -> dict[str, str]:
    """Each `## gpustack-iac ...` heading's text up to the next heading."""
    parts = re.split(r"^## (gpustack-iac[^\n]*)\n", page, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_committed_cli_docs_are_current() -> None:
    assert not is_stale(CLI_MD), "docs/cli.md is stale: run python -m gpustack_iac.commands.clidocs"


def test_every_command_argument_and_option_is_documented() -> None:
    docs = list(walk(cli_main))
    paths = {d.path.removeprefix("gpustack-iac").strip() for d in docs}
    assert EXPECTED <= paths, f"commands missing from the walk: {EXPECTED - paths}"
    sections = _sections(render())
    for doc in docs:
        assert doc.path in sections, f"no section for {doc.path}"
        body = sections[doc.path]
        assert f"Usage: {doc.path} " in body
        for param in doc.command.params:
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    assert f"`{name}`" in body, f"{doc.path}: option {name} missing"
            else:
                assert f"`{param.make_metavar(doc.context)}`" in body, f"{doc.path}: argument {param.name} missing"
        assert "`-h`, `--help`" in body, f"{doc.path}: help option missing"


def test_defaults_and_examples_come_from_the_code() -> None:
    sections = _sections(render())
    plan = sections["gpustack-iac plan"]
    assert "| `--format` | `terminal` \\| `markdown` \\| `json` | `terminal` |" in plan
    assert "| `--refresh`, `--no-refresh` | flag | `--refresh` |" in plan
    assert "| `--tail`, `-n` | integer | `200` |" in sections["gpustack-iac logs"]
    # Every example line of a help text (the indented lines of its `\b` paragraph) is in a bash block.
    for doc in walk(cli_main):
        help_text = doc.command.help or ""
        if "\b" not in help_text:
            continue
        examples = [line.strip() for line in help_text.split("\b", 1)[1].splitlines()[2:] if line.strip()]
        blocks = "\n".join(re.findall(r"```bash\n(.*?)```", sections[doc.path], flags=re.S))
        assert examples, doc.path
        for line in examples:
            assert line in blocks.splitlines(), f"{doc.path}: example {line!r} is not in a code block"


def _run_clidocs(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "60"}  # the page must not depend on the terminal width
    return subprocess.run([sys.executable, "-m", "gpustack_iac.commands.clidocs", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)


def test_check_mode_detects_a_stale_or_missing_page(tmp_path: Path) -> None:
    page = tmp_path / "cli.md"
    assert _run_clidocs("--out", str(page), "--check").returncode == 1  # missing
    written = _run_clidocs("--out", str(page))
    assert written.returncode == 0, written.stderr
    assert page.read_text(encoding="utf-8") == CLI_MD.read_text(encoding="utf-8")
    assert _run_clidocs("--out", str(page), "--check").returncode == 0
    page.write_text(page.read_text(encoding="utf-8").replace("Lines to show.", "Lines."), encoding="utf-8")
    stale = _run_clidocs("--out", str(page), "--check")
    assert stale.returncode == 1
    assert "stale" in stale.stderr


def _command_for(words: list[str]) -> tuple[CommandDoc, list[str]]:
    """The deepest command `words` names, and the words after it."""
    by_path = {d.path: d for d in walk(cli_main)}
    current = by_path["gpustack-iac"]
    rest = list(words)
    while rest and f"{current.path} {rest[0]}" in by_path:
        current = by_path[f"{current.path} {rest.pop(0)}"]
    return current, rest


def _invocations(page: str) -> list[str]:
    """Every `gpustack-iac ...` command line in the page's code blocks and inline code."""
    fence = re.compile(r"```[a-z]*\n(.*?)```", flags=re.S)
    # Inline code may wrap onto the next line of the Markdown source.
    inline = [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", fence.sub("", page))]
    code = fence.findall(page) + inline
    found: list[str] = []
    for chunk in code:
        for line in chunk.splitlines():
            if line.lstrip().startswith(("#", "Usage:")):  # comments, and usage lines with placeholders
                continue
            # Stop at shell syntax (redirections, pipes, command substitution, separators) and at the
            # backtick closing inline code quoted inside a code block (an error message naming a command).
            found += [m.group(0).strip() for m in re.finditer(r"(?<![\w./-])gpustack-iac(?![\w-])[^|;)>&\"\n`]*", line)]
    return found


@pytest.mark.parametrize("page_name", CHECKED_PAGES)
def test_commands_shown_in_the_docs_exist(page_name: str) -> None:
    page = (ROOT / "docs" / page_name).read_text(encoding="utf-8")
    invocations = _invocations(page)
    assert invocations, f"{page_name} shows no gpustack-iac command"
    for line in invocations:
        words = shlex.split(line)[1:]
        doc, rest = _command_for(words)
        if isinstance(doc.command, click.Group) and rest and not rest[0].startswith("-"):
            pytest.fail(f"{page_name}: {line!r}: no command {rest[0]!r} under {doc.path}")
        names = {n for p in doc.command.params if isinstance(p, click.Option) for n in (*p.opts, *p.secondary_opts)}
        help_option = doc.command.get_help_option(doc.context)
        names |= set(help_option.opts if help_option else ())
        for word in rest:
            if word == "--":  # the end of options: what follows is the command's own arguments
                break
            if word.startswith("-") and word != "-":
                assert word.split("=", 1)[0] in names, f"{page_name}: {line!r}: {doc.path} has no option {word}"
