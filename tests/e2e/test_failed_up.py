"""A first `up` that goes wrong: caught at `plan` when no host can take a group, or failing fast
with the controller's reason when the replicas crash; `status`, `logs` and `output` work after."""

from __future__ import annotations

import time

from gpustack_iac.engine.state import StateStore
from tests.e2e.conftest import Project

_CRASHING = """\
type: service
name: hello
port: 8000
auth: true
commands:
  - 'python3 -c "import sys; print(\\"boom: model file missing\\", flush=True); sys.exit(3)"'
replicas: 1
resources:
  cpu: 1..
  memory: 64MB..
  disk: 0GB..
"""


def test_unsatisfiable_group_fails_at_plan(local_project: Project) -> None:
    hello = local_project.config / "hello.gpustack.yml"
    hello.write_text(hello.read_text().replace("  - name: burst\n    replicas: 1\n    resources:\n",
                                               "  - name: burst\n    replicas: 1\n    resources:\n      gpu: A100\n"))
    plan = local_project.cli("plan", "local", check=False)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    text = " ".join(plan.stderr.split())
    assert "hello.gpustack.yml" in text
    assert "service hello group burst: no host can run a replica" in text, text
    assert "local-0: needs GPU A100:1" in text and "local-1: needs GPU A100:1" in text, text
    assert "Traceback" not in plan.stderr


def test_crashing_service_fails_up_fast_then_status_logs_output_work(local_project: Project) -> None:
    (local_project.config / "hello.gpustack.yml").write_text(_CRASHING)
    started = time.monotonic()
    up = local_project.cli("up", "local", "--yes", check=False, timeout=200)
    took = time.monotonic() - started
    assert up.returncode == 1, up.stdout + up.stderr
    # Far below the 300 s readiness timeout: the crash loop ends the wait (generous bound).
    assert took < 120, took
    text = " ".join((up.stdout + up.stderr).split())
    assert "crash loop" in text and "exit code 3" in text, text

    outputs = local_project.outputs()
    assert outputs["gateway_url"].startswith("http://127.0.0.1:")
    assert outputs["endpoints"]["hello"].startswith(outputs["gateway_url"])
    status = local_project.cli("status")
    assert "hello" in status.stdout and "0/1" in status.stdout, status.stdout
    logs = local_project.cli("logs", "hello")
    assert "boom: model file missing" in logs.stdout, logs.stdout

    # Even with no stack outputs at all (an up stopped before recording them), a running gateway answers.
    store = StateStore(local_project.root / ".gpustack" / "state", "local", "dev", passphrase="e2e-test-passphrase")
    store.set_outputs({})
    assert "gateway_url" not in local_project.outputs()
    assert "hello" in local_project.cli("status").stdout
