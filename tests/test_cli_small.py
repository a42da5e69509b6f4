"""Small CLI rules: nothing to destroy is not an error; unlocking an unreadable lock says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gpustack_iac.engine.embedded.engine import EmbeddedEngine
from gpustack_iac.engine.state import StateStore


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPUSTACK_STATE_DIR": str(state), "GPUSTACK_PASSPHRASE": "pw"}
    return subprocess.run([sys.executable, "-m", "gpustack_iac", *args], cwd=state.parent, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _empty_stack(state: Path) -> StateStore:
    store = StateStore(state, "proj", "dev", passphrase="pw")
    assert EmbeddedEngine("proj", "dev", store).up(lambda: None).ok
    return store


def test_destroy_without_a_stack_and_of_an_empty_stack_both_exit_0(tmp_path: Path) -> None:
    never = _cli(tmp_path / "state", "destroy", "--yes")
    assert never.returncode == 0 and "Nothing to destroy" in never.stdout, never.stdout + never.stderr
    _empty_stack(tmp_path / "state")
    emptied = _cli(tmp_path / "state", "destroy", "--yes")
    assert emptied.returncode == 0 and "has nothing deployed" in emptied.stdout, emptied.stdout + emptied.stderr


def test_force_unlock_of_an_empty_lock_file_says_it_removed_it(tmp_path: Path) -> None:
    store = _empty_stack(tmp_path / "state")
    store.lock_path.write_text("")
    out = _cli(tmp_path / "state", "state", "unlock", "--force")
    assert out.returncode == 0, out.stderr
    assert "Removed an unreadable lock file" in out.stdout and not store.lock_path.exists()
    again = _cli(tmp_path / "state", "state", "unlock", "--force")
    assert "The stack was not locked." in again.stdout


def test_plan_project_option_names_the_project_and_help_says_how_it_is_chosen(tmp_path: Path) -> None:
    import json

    example = Path(__file__).resolve().parents[1] / "examples" / "local"
    done = _cli(tmp_path / "state", "plan", str(example), "--project", "team-a", "--format", "json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["project"] == "team-a"
    assert all("::team-a::" in step["urn"] for step in plan["steps"])
    helped = _cli(tmp_path / "state", "up", "--help")
    assert "--project" in helped.stdout and "directory of the first" in " ".join(helped.stdout.split())
