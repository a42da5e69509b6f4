"""When a dev environment stops for inactivity: a pure rule on session counts and the clock.

The clock for "no SSH session for `inactivity` seconds" runs from the last session. Before the first
one it cannot run from sshd's readiness alone: the user learns the address only when `up` has
finished (its remaining steps, a service rolling out beside it, can take minutes), so a short
inactivity duration stopped environments nobody could have reached yet. Until the first session the
environment therefore waits at least FIRST_SESSION_WAIT_S after readiness.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_SESSION_WAIT_S = 600.0  # `up` to the user's first `ssh`, on a slow `up`


@dataclass
class IdleClock:
    inactivity: float  # seconds; 0: never stop
    ready_at: float
    last_session_at: float | None = None

    def observe(self, sessions: int, now: float) -> str | None:
        """Record a sample of open sessions; the reason to stop now, or None."""
        if sessions:
            self.last_session_at = now
            return None
        if not self.inactivity:
            return None
        if self.last_session_at is None:
            if now - self.ready_at >= max(self.inactivity, FIRST_SESSION_WAIT_S):
                return f"no SSH session for {max(self.inactivity, FIRST_SESSION_WAIT_S):g} s since it started"
            return None
        if now - self.last_session_at >= self.inactivity:
            return f"no SSH session for {self.inactivity:g} s"
        return None
