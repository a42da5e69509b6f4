"""`up examples/local` killed with SIGKILL at every step boundary and at random moments inside steps,
with and without its checkpoint afterwards: the next `up` adopts what runs and never starts a
second copy. Exactly the configured daemons and replicas run, `plan` has nothing to do, and
`destroy` leaves nothing behind."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import Project, processes_under, wait_until

pytestmark = pytest.mark.slow

STEPS = 6  # examples/local: 2 agents, 1 gateway, 2 agent registrations, 1 service registration
EXPECTED = {"agent": 2, "gateway": 1, "watchdog": 3, "replica": 3}


@dataclass(frozen=True)
class Census:
    counts: dict[str, int]
    replica_groups: Counter[str]  # replica id -> process groups running it


def census(root: Path) -> Census:
    """Count the runtime's processes that belong to this project, by kind."""
    counts = dict.fromkeys(EXPECTED, 0)
    groups: dict[str, set[int]] = {}
    marker = str(root)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if marker in cmdline:
                for kind in ("watchdog", "agent", "gateway"):
                    if f"gpustack_iac.runtime.{kind} " in cmdline + " ":
                        counts[kind] += 1
                        break
            env = proc.environ()
            if env.get("GPUSTACK_AGENT_STATE_DIR", "").startswith(marker) and "GPUSTACK_REPLICA_ID" in env:
                groups.setdefault(env["GPUSTACK_REPLICA_ID"], set()).add(os.getpgid(proc.pid))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError):
            continue
    counts["replica"] = sum(len(g) for g in groups.values())
    return Census(counts, Counter({rid: len(g) for rid, g in groups.items()}))


def start_up(project: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gpustack_iac", "up", "local", "--yes"], cwd=project, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_up_at_step(project: Project, steps: int) -> None:
    proc = start_up(project.root, {**project.env, "GPUSTACK_TEST_CRASH_AFTER_STEPS": str(steps)})
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, f"up was to kill itself after step {steps}: {proc.returncode} {err.decode()[-2000:]}"


def kill_up_within_a_step(project: Project, rng: random.Random) -> None:
    """SIGKILL once the first daemon is being started, plus a random part of the steps that follow."""
    proc = start_up(project.root, project.env)
    try:
        local = project.root / ".gpustack" / "local"
        wait_until(lambda: proc.poll() is not None or any(local.rglob("*.watchdog.json")), 120, 0.02,
                   what="the first daemon to start")
        time.sleep(rng.uniform(0.0, 2.0))
    finally:
        proc.kill()
        proc.wait(timeout=30)


def lose_checkpoint(project: Project) -> None:
    """What a lost or reset state directory looks like: no checkpoint, no journal, no lock."""
    stacks = project.root / ".gpustack" / "state" / ".pulumi" / "stacks"
    shutil.rmtree(stacks, ignore_errors=True)


def resume_and_check(project: Project) -> None:
    project.cli("state", "unlock", "--stack", "dev", check=False)
    project.cli("up", "local", "--yes")
    found = wait_until(lambda: (c := census(project.root)).counts == EXPECTED and c, 60,
                       what=f"exactly {EXPECTED} (last: {census(project.root).counts})")
    assert set(found.replica_groups.values()) == {1}, found.replica_groups
    plan = project.cli("plan", "local", "--detailed-exitcode", check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert census(project.root).counts == EXPECTED  # nothing started late beside the adopted ones
    project.cli("destroy", "--yes")
    wait_until(lambda: not processes_under(project.root) and sum(census(project.root).counts.values()) == 0, 30,
               what="nothing left after destroy")


@pytest.mark.parametrize("steps", range(1, STEPS + 1))
def test_kill_9_at_step_boundary_then_up(local_project: Project, steps: int) -> None:
    kill_up_at_step(local_project, steps)
    resume_and_check(local_project)


@pytest.mark.parametrize("seed", range(2))
def test_kill_9_within_a_step_then_up(local_project: Project, seed: int) -> None:
    kill_up_within_a_step(local_project, random.Random(seed))
    resume_and_check(local_project)


@pytest.mark.parametrize("steps", [2, 5])
def test_kill_9_at_step_boundary_then_checkpoint_lost_then_up(local_project: Project, steps: int) -> None:
    kill_up_at_step(local_project, steps)
    lose_checkpoint(local_project)
    resume_and_check(local_project)


def test_kill_9_within_a_step_then_checkpoint_lost_then_up(local_project: Project) -> None:
    kill_up_within_a_step(local_project, random.Random(7))
    lose_checkpoint(local_project)
    resume_and_check(local_project)


def test_checkpoint_lost_after_a_full_up_then_up_adopts(local_project: Project) -> None:
    local_project.cli("up", "local", "--yes")
    before = {p.pid for p in processes_under(local_project.root)}
    lose_checkpoint(local_project)
    local_project.cli("up", "local", "--yes")
    daemons = {p.pid for p in processes_under(local_project.root)
               if any(f"gpustack_iac.runtime.{k}" in " ".join(p.cmdline()) for k in ("agent", "gateway", "watchdog"))}
    assert daemons and daemons <= before  # the same processes, adopted
    resume_and_check(local_project)
