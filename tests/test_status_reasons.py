"""`status` says why a replica group is not ready."""

from __future__ import annotations

from gpustack_iac.commands.runtime import not_ready_reasons


def test_each_group_below_desired_gets_its_reason() -> None:
    services = [{"name": "hello", "groups": [
        {"name": "base", "ready": 2, "desired": 2, "replicas": [{"id": "a"}, {"id": "b"}]},
        {"name": "burst", "ready": 0, "desired": 1, "no_capacity": True, "message": "no agent matches gpu=A100:1"},
        {"name": "spill", "ready": 0, "desired": 1, "no_capacity": True},
        {"name": "crashy", "ready": 0, "desired": 1, "crash_streak": 4, "replicas": [{"id": "c", "state": "exited"}]},
        {"name": "slow", "ready": 0, "desired": 1, "replicas": [{"id": "d", "state": "running"}]},
        {"name": "new", "ready": 0, "desired": 1},
    ]}]
    lines = not_ready_reasons(services)
    assert len(lines) == 5 and not any("hello/base" in line for line in lines)
    assert lines[0].startswith("hello/burst 0/1: no agent matches gpu=A100:1;")
    assert "no host with room" in lines[1] and "keep exiting (4 in a row)" in lines[2]
    assert "waiting for their readiness probe (running)" in lines[3] and "no replica placed yet" in lines[4]
    assert all("gpustack-iac logs hello --group" in line for line in lines)
