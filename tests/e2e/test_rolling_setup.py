"""A change of `setup` replaces every replica: what the plan promises is what `up` does.

`setup` is prepended to the commands at compile time; the group generation is computed from that
final group (contract/restart.py), so the controller sees the change the plan summary names.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Project, http, wait_until

pytestmark = pytest.mark.slow


def _replica_ids(project: Project) -> set[str]:
    services = json.loads(project.cli("status", "--format", "json").stdout)["services"]
    return {r["id"] for g in services[0]["groups"] for r in g["replicas"] if r.get("ready")}


def test_setup_change_rolls_every_replica(local_project: Project) -> None:
    hello = local_project.config / "hello.gpustack.yml"
    hello.write_text(hello.read_text().replace("commands:\n", "setup:\n  - echo setup-v1\ncommands:\n", 1))
    local_project.cli("up", "local", "--yes")
    outputs = local_project.outputs()
    before = wait_until(lambda: ids if len(ids := _replica_ids(local_project)) == 3 else None, 120, what="3 ready replicas")

    hello.write_text(hello.read_text().replace("echo setup-v1", "echo setup-v2"))
    plan = local_project.cli("plan", "local")
    assert "commands changed → rolling update" in plan.stdout, plan.stdout
    local_project.cli("up", "local", "--yes")

    def replaced() -> set[str] | None:
        ids = _replica_ids(local_project)
        return ids if len(ids) == 3 and not ids & before else None

    after = wait_until(replaced, 180, interval=1, what="every replica replaced after the setup change")
    assert len(after) == 3
    logs = local_project.cli("logs", "hello").stdout
    assert "setup-v2" in logs, logs
    assert http("GET", outputs["endpoint"] + "/", outputs["token"])[0] == 200
    # Nothing left to do: the plan after up agrees with what runs.
    assert local_project.cli("plan", "local", "--detailed-exitcode", check=False).returncode == 0
