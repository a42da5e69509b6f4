"""The agent's run-once restart policies, mounts in process mode and host volumes API."""

from __future__ import annotations

import random
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from gpustack_iac.errors import AgentApiError
from gpustack_iac.runtime.agent.spec import parse_replica_spec
from gpustack_iac.runtime.backoff import Backoff
from tests.runtime.conftest import AgentProcess


def _wait_finished(agent: AgentProcess, rid: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replica = agent.call(lambda c: c.get(rid))
        if replica and replica.get("finished_at") is not None:
            return replica
        time.sleep(0.1)
    raise AssertionError(f"{rid} did not finish")


@pytest.mark.parametrize(("policy", "command", "finishes"), [("never", "exit 3", True), ("on-failure", "exit 0", True)])
def test_run_once_policies_keep_the_exit_code(shared_agent: AgentProcess, policy: str, command: str, finishes: bool) -> None:
    rid = f"once-{policy}"
    shared_agent.call(lambda c: c.start({"id": rid, "commands": [command], "restart": policy}))
    replica = _wait_finished(shared_agent, rid)
    assert replica["state"] == "exited" and replica["restarts"] == 0
    assert replica["exit_code"] == int(command.split()[1])
    shared_agent.call(lambda c: c.stop(rid))


def test_on_failure_restarts_a_failing_replica(shared_agent: AgentProcess) -> None:
    rid = "once-restarts"
    shared_agent.call(lambda c: c.start({"id": rid, "commands": ["exit 1"], "restart": "on-failure"}))
    deadline = time.monotonic() + 30
    while shared_agent.call(lambda c: c.get(rid))["restarts"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shared_agent.call(lambda c: c.stop(rid))


def test_a_bad_restart_policy_is_named() -> None:
    with pytest.raises(Exception, match="restart: expected one of always, on-failure, never"):
        parse_replica_spec({"id": "x", "commands": ["true"], "restart": "sometimes"})


def test_process_mode_mount_gives_env_and_link(shared_agent: AgentProcess, tmp_path: Path) -> None:
    source, target = tmp_path / "vol", tmp_path / "mnt" / "data"
    rid = "mounted"
    shared_agent.call(lambda c: c.start({"id": rid, "restart": "never", "commands": [
        f'test "$GPUSTACK_MOUNT_{str(target).strip("/").replace("/", "_").replace("-", "_").upper()}" = {source} '
        f'&& echo written > {target}/file'],
        "mounts": [{"source": str(source), "target": str(target), "name": "vol"}]}))
    assert _wait_finished(shared_agent, rid)["exit_code"] == 0
    assert (source / "file").read_text() == "written\n"
    assert target.is_symlink()
    shared_agent.call(lambda c: c.stop(rid))
    assert not target.exists() and not target.is_symlink()  # the link goes with the replica, the data stays
    assert (source / "file").exists()


def test_volumes_api_creates_reports_and_deletes_only_its_own(shared_agent: AgentProcess, tmp_path: Path) -> None:
    path = tmp_path / "volumes" / "data"

    async def put(c: Any) -> Any:
        return await c._json("PUT", "/v1/volumes/data", body={"path": str(path), "size_bytes": 2**30})

    info = shared_agent.call(put)
    assert info["name"] == "data" and info["size_bytes"] == 2**30 and path.is_dir()
    (path / "x").write_text("12345")
    again = shared_agent.call(put)  # idempotent: the data is kept
    assert again["used_bytes"] >= 5 and (path / "x").exists()
    query = urllib.parse.urlencode({"path": str(path)})

    def delete_as(name: str) -> Any:
        async def run(c: Any) -> Any:
            return await c._json("DELETE", f"/v1/volumes/{name}?{query}")
        return run

    with pytest.raises(AgentApiError) as wrong:
        shared_agent.call(delete_as("other"))
    assert wrong.value.status == 409 and path.exists()
    shared_agent.call(delete_as("data"))
    assert not path.exists()


def test_backoff_grows_with_jitter_and_stops_at_duration() -> None:
    policy = Backoff(base=1.0, cap=8.0, jitter=0.5, duration=10.0)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in range(1, 6)]
    for n, d in enumerate(delays, start=1):
        raw = min(2 ** (n - 1), 8.0)
        assert raw * 0.5 <= d <= raw
    assert policy.next_delay(1, first_started=0.0, now=9.6, rng=rng) is None
    assert policy.next_delay(1, first_started=0.0, now=1.0, rng=rng) is not None
