"""The CI example rehearsed: its own job steps, run as separate "runners" (a fresh directory each, no
shared files) against one S3 state (moto's server), with a stand-in for the GitHub CLI.

PR plan comment → merge → apply of the saved plan → drift found by the scheduled check after a manual
change (the deployed processes killed, as by a host reboot) → a second pull request's plan comment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import EXAMPLES, kill_all, processes_under
from tests.engine.test_render_ci_example import GH_STANDIN
from tests.support.standins import S3, moto_s3

WORKFLOW = EXAMPLES / "ci" / "gpustack-iac.yml"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("ci-moto")) as running:
        yield running


class Rehearsal:
    def __init__(self, tmp: Path, s3: S3) -> None:
        self.tmp = tmp
        self.jobs: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())["jobs"]
        # The CLI installed where the tests run stands for the workflow's `pip install` step.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUSTACK_", "PULUMI_", "COLUMNS", "LINES"))}
        self.env.update(s3.env, PATH=path, CONFIG_PATH="infra/", GPUSTACK_PASSPHRASE="ci-passphrase", REPO="o/r",
                        GH_TOKEN="t", GPUSTACK_STATE=s3.url(f"ci-{uuid.uuid4().hex[:10]}"))
        self.runs = 0

    def runner(self, repo: Path) -> Path:
        """A fresh runner: an empty directory with a checkout of `repo`."""
        self.runs += 1
        work = self.tmp / f"runner-{self.runs}"
        shutil.copytree(repo, work)
        return work

    def comments(self, pr: str) -> Path:
        return self.tmp / f"comments-{pr}.json"

    def _gh_path(self, pr: str) -> str:
        """A GitHub CLI stand-in holding pull request `pr`'s comments."""
        bin_dir = self.tmp / f"gh-{pr}"
        if not bin_dir.exists():
            bin_dir.mkdir()
            self.comments(pr).write_text("[]")
            gh = bin_dir / "gh"
            gh.write_text(GH_STANDIN.format(python=sys.executable, store=str(self.comments(pr)), log=str(self.tmp / "gh.log")))
            gh.chmod(0o755)
        return f"{bin_dir}{os.pathsep}{self.env['PATH']}"

    def step(self, job: str, name: str, work: Path, **env: str) -> subprocess.CompletedProcess[str]:
        script = next(s["run"] for s in self.jobs[job]["steps"] if s.get("name") == name)
        for f in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
            env.setdefault(f, str(work / f.lower()))
        if "PR" in env:
            env["PATH"] = self._gh_path(env["PR"])
        return subprocess.run(["bash", "-e", "-c", script], cwd=work, env={**self.env, **env}, capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)


def _repo(tmp: Path, nodes: int) -> Path:
    repo = tmp / f"repo-{nodes}"
    (repo / "infra").mkdir(parents=True, exist_ok=True)
    for name in ("fleet.gpustack.yml", "gateway.gpustack.yml"):
        text = (EXAMPLES / "local" / name).read_text()
        (repo / "infra" / name).write_text(text.replace("nodes: 2", f"nodes: {nodes}"))
    return repo


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="needs bash and jq")
def test_pr_merge_apply_drift_second_pr(s3: S3, tmp_path: Path) -> None:
    ci = Rehearsal(tmp_path, s3)
    try:
        # 1. A pull request: plan (exit 2: changes) and one comment marked with project and stack.
        work = ci.runner(_repo(tmp_path, 1))
        done = ci.step("plan", "Plan", work, PR="1")
        assert done.returncode == 0, done.stderr
        assert "exitcode=2" in (work / "github_output").read_text()
        assert ci.step("plan", "Post the plan as one pull-request comment (edited in place on later pushes)", work,
                       PR="1").returncode == 0
        [comment] = json.loads(ci.comments("1").read_text())
        assert comment["body"].startswith("<!-- gpustack-iac-plan:infra/dev -->")
        assert "to create" in comment["body"]

        # 2. Merged: another runner plans again and applies exactly that saved plan.
        work = ci.runner(_repo(tmp_path, 1))
        for name in ("Plan", "Apply exactly the plan above"):
            done = ci.step("apply", name, work)
            assert done.returncode == 0, f"{name}: {done.stdout}\n{done.stderr}"
        assert "gpustack-iac plan" in (work / "github_step_summary").read_text()

        # 3. A manual change: the deployed processes are killed for good (a host reboot).
        kill_all(processes_under(work / ".gpustack"))

        # 4. The scheduled drift check, on a runner with no checkout at all, exits 2 naming what drifted.
        bare = tmp_path / "runner-drift"
        bare.mkdir()
        done = ci.step("drift", "Drift check", bare)
        assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
        assert "local-0" in done.stdout

        # 5. A second pull request (two nodes): its plan re-creates what drifted and adds the new node.
        work = ci.runner(_repo(tmp_path, 2))
        assert ci.step("plan", "Plan", work, PR="2").returncode == 0
        assert ci.step("plan", "Post the plan as one pull-request comment (edited in place on later pushes)", work,
                       PR="2").returncode == 0
        [comment] = json.loads(ci.comments("2").read_text())
        assert comment["body"].startswith("<!-- gpustack-iac-plan:infra/dev -->")
        assert "local-1" in comment["body"]
        # Pushed again: the same comment is edited, not a second one added.
        assert ci.step("plan", "Post the plan as one pull-request comment (edited in place on later pushes)", work,
                       PR="2").returncode == 0
        assert len(json.loads(ci.comments("2").read_text())) == 1
    finally:
        subprocess.run([sys.executable, "-m", "gpustack_iac", "destroy", "--yes"], cwd=tmp_path, env=ci.env,
                       capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
        kill_all(processes_under(tmp_path))
