"""The first Ctrl-C during `up` ends the wait for a service at once, says what is left running and how
to resume (a real terminal, through pexpect)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLES, Project, kill_all, processes_under

STUCK = """type: service
name: stuck
port: 8000
commands:
  - sleep 3600
probes:
  - url: /health
    timeout: 2
    interval: 2
replicas: 1
resources:
  cpu: 1..
  memory: 64MB..
  disk: 0GB..
"""
# `up` waits up to 300 s for a service to get ready; well under that shows the wait was cut, not timed out.
INTERRUPT_SECONDS = 150


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_first_ctrl_c_stops_waiting_and_says_how_to_resume(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    infra = tmp_path / "proj" / "infra"
    infra.mkdir(parents=True)
    for name in ("fleet.gpustack.yml", "gateway.gpustack.yml"):
        shutil.copy(EXAMPLES / "local" / name, infra / name)
    (infra / "fleet.gpustack.yml").write_text((infra / "fleet.gpustack.yml").read_text().replace("nodes: 2", "nodes: 1"))
    (infra / "stuck.gpustack.yml").write_text(STUCK)
    project = Project(root=tmp_path / "proj", config=infra, extra_env={"COLUMNS": "250"})
    child = pexpect.spawn(sys.executable, ["-m", "gpustack_iac", "up", "infra", "--yes"], cwd=str(project.root),
                          env=project.env, dimensions=(50, 250), encoding="utf-8", timeout=300)
    try:
        # The service's step has started: `up` now waits for a replica that never gets ready.
        child.expect(r"ServiceRegistration stuck")
        child.sendintr()
        child.expect("up interrupted", timeout=INTERRUPT_SECONDS)
        child.expect(pexpect.EOF, timeout=60)
        child.close()
        said = " ".join(child.before.split()) if child.before else ""
        assert child.exitstatus == 130
        assert "Cut short: create stuck" in said and "keeps running" in said
        assert "`gpustack-iac up` again to resume" in said
    finally:
        if child.isalive():
            child.terminate(force=True)
        project.cli("destroy", "--yes", check=False, timeout=300)
        kill_all(processes_under(tmp_path))
