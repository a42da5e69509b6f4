"""The CI example: the workflow parses, comments with the renderer's marker, applies on main."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpustack_iac.engine.model import Plan
from gpustack_iac.engine.render import marker, render_markdown
from gpustack_iac.engine.render.markdown import MARKER_PREFIX

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "ci" / "gpustack-iac.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _triggers(doc: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    triggers = doc.get("on", doc.get(True))
    assert isinstance(triggers, dict)
    return triggers


def _runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_triggers(workflow: dict[str, Any]) -> None:
    triggers = _triggers(workflow)
    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]


def test_plan_job_plans_and_updates_one_comment(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["plan"]
    assert "pull_request" in job["if"]
    assert job["permissions"]["pull-requests"] == "write"
    script = "\n".join(_runs(job))
    assert "gpustack-iac plan" in script
    assert "--format markdown -o plan.json" in script and "> plan.md" in script
    assert "--detailed-exitcode" in script
    # The comment step finds the marker comment and edits it, else creates one.
    assert f"<!-- {MARKER_PREFIX}:" in script
    assert "gh api --paginate" in script
    assert "--method PATCH" in script and "--method POST" in script
    assert "body=@plan.md" in script


def test_apply_job_runs_on_main_only(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["apply"]
    assert "refs/heads/main" in job["if"] and "push" in job["if"]
    script = "\n".join(_runs(job))
    assert "gpustack-iac up plan.json --yes" in script
    assert job["concurrency"]["cancel-in-progress"] is False


def test_marker_the_workflow_expects_is_what_the_renderer_writes() -> None:
    first_line = render_markdown(Plan(stack="prod", project="infra")).splitlines()[0]
    assert first_line == marker("prod", "infra") == f"<!-- {MARKER_PREFIX}:infra/prod -->"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_every_run_script_is_valid_bash(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        for script in _runs(job):
            done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"{name}: {done.stderr}"


# A stand-in for the GitHub CLI (an external service we cannot reach): it keeps the pull
# request's comments in a JSON file and filters with the real jq, as `gh api --jq` does.
GH_STANDIN = r'''#!{python}
import json, subprocess, sys
from pathlib import Path

store = Path({store!r})
comments = json.loads(store.read_text())
args = sys.argv[1:]
assert args[0] == "api", args
method, jq, body, url = "GET", None, None, None
i = 1
while i < len(args):
    a = args[i]
    if a == "--method":
        method = args[i + 1]; i += 2
    elif a == "--jq":
        jq = args[i + 1]; i += 2
    elif a == "-F":
        key, _, value = args[i + 1].partition("=")
        assert key == "body" and value.startswith("@"), args
        body = Path(value[1:]).read_text(); i += 2
    elif a == "--paginate":
        i += 1
    else:
        url = a; i += 1
with open({log!r}, "a") as log:
    log.write(json.dumps([method, url]) + "\n")
if method == "GET":
    out = json.dumps(comments)
    if jq:
        out = subprocess.run(["jq", "-r", jq], input=out, capture_output=True, text=True, check=True).stdout
    sys.stdout.write(out)
elif method == "POST":
    comments.append({{"id": 1000 + len(comments), "body": body}})
elif method == "PATCH":
    cid = int(url.rsplit("/", 1)[1])
    for c in comments:
        if c["id"] == cid:
            c["body"] = body
store.write_text(json.dumps(comments))
'''


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="needs bash and jq")
def test_comment_step_creates_then_edits_one_comment(workflow: dict[str, Any], tmp_path: Path) -> None:
    script = next(s for s in _runs(workflow["jobs"]["plan"]) if "gh api" in s)
    store, log = tmp_path / "comments.json", tmp_path / "calls.log"
    store.write_text(json.dumps([{"id": 7, "body": "unrelated review comment"}]))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(GH_STANDIN.format(python=sys.executable, store=str(store), log=str(log)))
    gh.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "REPO": "o/r", "PR": "5", "GH_TOKEN": "t"}

    def post(plan_text: str) -> None:
        (tmp_path / "plan.md").write_text(plan_text)
        done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr

    first = render_markdown(Plan(stack="prod"))
    post(first)
    post(first.replace("No changes", "Still no changes"))
    other_stack = render_markdown(Plan(stack="staging"))
    post(other_stack)

    comments = json.loads(store.read_text())
    assert [c["id"] for c in comments] == [7, 1001, 1002]
    assert "Still no changes" in comments[1]["body"]
    assert comments[2]["body"] == other_stack
    calls = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    assert [m for m, _ in calls] == ["GET", "POST", "GET", "PATCH", "GET", "POST"]
    assert calls[3][1] == "repos/o/r/issues/comments/1001"


def test_comment_step_refuses_a_file_without_marker(workflow: dict[str, Any], tmp_path: Path) -> None:
    script = next(s for s in _runs(workflow["jobs"]["plan"]) if "gh api" in s)
    (tmp_path / "plan.md").write_text("Plan: 1 to create\n")
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "REPO": "o/r", "PR": "5"})
    assert done.returncode == 1
    assert "does not start with the gpustack-iac-plan marker" in done.stdout


GITLAB = WORKFLOW.with_name("gitlab-ci.yml")


def test_gitlab_example_plans_applies_and_checks_drift() -> None:
    doc = yaml.safe_load(GITLAB.read_text(encoding="utf-8"))
    scripts = {name: "\n".join(doc[name]["script"]) for name in ("plan", "apply", "drift")}
    assert "--detailed-exitcode" in scripts["plan"] and f"<!-- {MARKER_PREFIX}:" in scripts["plan"]
    assert "gpustack-iac up plan.json --yes" in scripts["apply"] and doc["apply"]["resource_group"]
    assert "refresh --engine embedded --detailed-exitcode" in scripts["drift"]
    assert "pulumi" not in GITLAB.read_text().replace("gpustack-iac", "").lower().replace("no pulumi cli", "")
    if shutil.which("bash"):
        for name, script in scripts.items():
            done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"{name}: {done.stderr}"
