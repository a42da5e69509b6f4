"""Output that survives a pipe: without a terminal nothing is wrapped, so a URL, a command, an id
or a value is always on one line (e2e: the `curl` hint and `status` ids in tests/e2e)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["GPUSTACK_STATE_DIR"] = str(cwd / "state")
    return subprocess.run([sys.executable, "-m", "gpustack_iac", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_piped_plan_keeps_every_value_on_one_line(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "configuration"
    shutil.copytree(REPO / "examples" / "local", deep)
    plan = _run(tmp_path, "plan", str(deep))
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    working_dirs = [line for line in lines if "working_dir" in line]
    assert working_dirs and all(f'"{deep.resolve()}"' in line for line in working_dirs), working_dirs
    generations = [line for line in lines if "definition.generation" in line]
    # Generations are hashes over inputs that include secrets: shown masked, never in the clear.
    assert generations and all(line.rstrip().endswith("[secret]") for line in generations), generations
    assert max(len(line) for line in lines) > 80


def test_piped_validate_keeps_file_paths_whole(tmp_path: Path) -> None:
    deep = tmp_path / ("another-long-directory-name-" * 4) / "cfg"
    shutil.copytree(REPO / "examples" / "local", deep)
    out = _run(tmp_path, "validate", str(deep))
    assert out.returncode == 0, out.stderr
    assert str(deep.relative_to(tmp_path) / "hello.gpustack.yml") in out.stdout
