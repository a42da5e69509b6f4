"""The dev environment's inactivity rule (runtime/devenv/idle.py), on an injected clock."""

from __future__ import annotations

from gpustack_iac.runtime.devenv.idle import FIRST_SESSION_WAIT_S, IdleClock


def test_no_stop_before_the_first_session_however_short_the_inactivity() -> None:
    # The flaky e2e's cause: sshd was ready inside `up`, and an 8 s inactivity ran out before `up` ended
    # and the CLI's first `ssh` connected ("Connection refused").
    clock = IdleClock(inactivity=8, ready_at=0.0)
    assert all(clock.observe(0, t) is None for t in (8.0, 60.0, FIRST_SESSION_WAIT_S - 1))
    assert clock.observe(0, FIRST_SESSION_WAIT_S) == f"no SSH session for {FIRST_SESSION_WAIT_S:g} s since it started"


def test_a_long_inactivity_is_kept_before_the_first_session_too() -> None:
    clock = IdleClock(inactivity=2 * FIRST_SESSION_WAIT_S, ready_at=100.0)
    assert clock.observe(0, 100.0 + FIRST_SESSION_WAIT_S) is None
    assert clock.observe(0, 100.0 + 2 * FIRST_SESSION_WAIT_S) is not None


def test_after_a_session_the_clock_runs_from_the_last_one() -> None:
    clock = IdleClock(inactivity=8, ready_at=0.0)
    assert clock.observe(1, 5.0) is None
    assert clock.observe(0, 12.9) is None
    assert clock.observe(2, 13.0) is None
    assert clock.observe(0, 20.9) is None
    assert clock.observe(0, 21.0) == "no SSH session for 8 s"
    assert clock.last_session_at == 13.0


def test_zero_inactivity_never_stops() -> None:
    clock = IdleClock(inactivity=0, ready_at=0.0)
    assert clock.observe(0, 10 * FIRST_SESSION_WAIT_S) is None
    clock.observe(1, 1.0)
    assert clock.observe(0, 10 * FIRST_SESSION_WAIT_S) is None
