"""`up`'s readiness wait stops at once on what waiting cannot fix, with the controller's reason."""

from __future__ import annotations

import pytest

from gpustack_iac.providers.control import ServiceNotReady, _fail_fast


def test_no_capacity_fails_at_once_with_the_reason() -> None:
    group = {"name": "big", "no_capacity": True, "message": "no capacity: local-0: needs 64.0GiB memory, 3.1GiB free"}
    with pytest.raises(ServiceNotReady, match="service llm group big: no capacity: local-0: needs 64.0GiB memory"):
        _fail_fast("llm", [group])


def test_an_agent_not_reached_yet_is_no_verdict() -> None:
    _fail_fast("llm", [{"name": "g", "no_capacity": True, "message": "no capacity: local-0: host facts unknown (agent not reached yet)"}])


def test_a_crash_loop_fails_with_the_replica_detail_and_a_logs_hint() -> None:
    group = {"name": "base", "crash_streak": 2, "message": "replica hello-base-1 process exited (exit code 3); replacing it in 1s"}
    with pytest.raises(ServiceNotReady, match=r"crash loop: replica hello-base-1 process exited \(exit code 3\).*logs hello --group base"):
        _fail_fast("hello", [group])
    _fail_fast("hello", [{**group, "crash_streak": 1}])  # one restart is not a loop
