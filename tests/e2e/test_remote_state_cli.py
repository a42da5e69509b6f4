"""`up` from one runner's directory, `status`, `output` and `destroy` from another with no configuration,
with the state in S3 (moto) and PostgreSQL.

Each run starts an agent and a gateway (about two minutes on a busy 2-core machine), so the CLI path is
run on two stores with different implementations; every store's own operations, the same ones this
path uses, are covered per store by tests/engine/test_remote_state.py.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLES, Project, kill_all, processes_under
from tests.support.standins import STARTERS, StandIn


@pytest.fixture(scope="module", params=["s3", "postgres"])
def standin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with STARTERS[request.param](tmp_path_factory.mktemp(f"cli-{request.param}")) as running:
        yield running


@pytest.mark.slow
def test_up_here_status_and_destroy_there(standin: StandIn, tmp_path: Path) -> None:
    url = standin.url(f"gpustack-{uuid.uuid4().hex[:12]}")
    config = tmp_path / "runner-a" / "infra"
    config.mkdir(parents=True)
    for name in ("fleet.gpustack.yml", "gateway.gpustack.yml"):
        shutil.copy(EXAMPLES / "local" / name, config / name)
    # One agent is enough to show the stack is reachable.
    fleet = config / "fleet.gpustack.yml"
    fleet.write_text(fleet.read_text().replace("nodes: 2", "nodes: 1"))
    env = {**standin.env, "GPUSTACK_STATE": url}
    runner_a = Project(root=tmp_path / "runner-a", config=config, extra_env=env)
    (tmp_path / "runner-b").mkdir()
    runner_b = Project(root=tmp_path / "runner-b", config=tmp_path / "runner-b", extra_env=env)
    try:
        runner_a.cli("up", "infra", "--yes")
        assert not list((tmp_path / "runner-b").iterdir())

        status = runner_b.cli("status", "--state", url)
        assert "local-0" in status.stdout, status.stdout
        assert runner_b.cli("output", "gateway_url").stdout.strip().startswith("http://127.0.0.1:")
        runner_b.cli("destroy", "--yes")
        assert "no resources" in runner_b.cli("state", "list").stdout.lower() or \
            "local-0" not in runner_b.cli("state", "list").stdout
        assert not processes_under(tmp_path / "runner-a" / ".gpustack")
    finally:
        runner_b.cli("destroy", "--yes", check=False)
        kill_all(processes_under(tmp_path))
