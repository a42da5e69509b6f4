"""End-to-end fixtures: the real CLI in a subprocess, in a temporary project, with a reaper.

Every process `up` starts lives under the test's temporary directory (its state dir holds the
agent and gateway files, the replicas run there), so the reaper finds them by that path and
kills them by pid even when a test fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from tests.support.cli import run_cli
from tests.support.wait import wait_until  # noqa: F401 - re-exported: e2e tests import it from here

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory mentions `root`."""
    marker = str(root)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
            if proc.pid != os.getpid() and (marker in cmdline or cwd.startswith(marker)) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


@dataclass
class Project:
    """A copy of an example in a temporary directory, driven through the real CLI."""

    root: Path
    config: Path
    extra_env: dict[str, str] = field(default_factory=dict)  # set last, over the defaults below

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GPUSTACK_STATE_DIR"] = str(self.root / ".gpustack" / "state")
        env["GPUSTACK_PASSPHRASE"] = "e2e-test-passphrase"
        env.pop("PULUMI_CONFIG_PASSPHRASE", None)
        # pytest-xdist's workers set COLUMNS=80, which the CLI honours as an explicit width even when piped.
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(args, self.root, self.env, check=check, timeout=timeout)

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.cli("output", "--json", "--show-secrets").stdout)


class WideProject(Project):
    """Status tables printed unwrapped, so a test can find a row's cells on one line."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "COLUMNS": "250"}


@contextlib.contextmanager
def example_project(tmp_path: Path, example: str, folder: str | None = None,
                    kind: type[Project] = Project) -> Iterator[Project]:
    """A copy of `examples/<example>` in `<tmp>/proj/<folder>`, destroyed and its processes killed afterwards."""
    root = tmp_path / "proj"
    shutil.copytree(EXAMPLES / example, root / (folder or example))
    project = kind(root=root, config=root / (folder or example))
    try:
        yield project
    finally:
        try:
            project.cli("destroy", "--yes", check=False, timeout=300)
        finally:
            kill_all(processes_under(root))


@pytest.fixture
def local_project(tmp_path: Path) -> Iterator[Project]:
    with example_project(tmp_path, "local") as project:
        yield project


def http(method: str, url: str, token: str | None = None, body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def port_in_use(port: int) -> bool:
    return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp"))
