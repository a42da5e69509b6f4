"""What to start and stop in one replica group on one reconcile tick: scaling and rolling updates.

A pure function of the group's replicas, so the surge-one / drain-one sequence, the "never fewer
ready replicas than before" rule and the failure handling are unit-testable without processes.

Rolling update (issue 5 item 4), per group, when its generation changes:
1. start one replica of the new generation (surge);
2. wait until it is ready (the caller routes it as soon as it is);
3. stop one old replica (the caller removes it from routing first, then drains it);
4. repeat until the new generation has the desired count, then stop the remaining old ones.
If a new replica crashes or is not ready by the deadline, the rollout stops: every new replica is
stopped, the old generation keeps serving and is replaced from the previous definition when one of
its replicas fails, and the failure is reported until a different generation is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RolloutState = Literal["running", "failed", "done"]


@dataclass(frozen=True)
class ReplicaView:
    id: str
    generation: str
    ready: bool
    failed: bool  # crashed (agent reports restarting/exited/failed) or failed its liveness probes
    created_at: float


@dataclass(frozen=True)
class RolloutReport:
    group: str
    from_generation: str
    to_generation: str
    state: RolloutState
    updated: int  # ready replicas of the new generation
    desired: int
    message: str

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "from_generation": self.from_generation,
            "to_generation": self.to_generation,
            "state": self.state,
            "updated": self.updated,
            "desired": self.desired,
            "message": self.message,
        }


@dataclass(frozen=True)
class GroupPlan:
    start: int  # replicas to start with generation `target`
    target: str
    stop: tuple[str, ...]  # replica ids to remove from routing and stop
    rollout: RolloutReport | None
    failed_generation: str | None  # set when this tick decided that the new generation failed


def _surplus(replicas: list[ReplicaView], n: int) -> list[str]:
    """The `n` replicas to stop first: not ready before ready, newest before oldest."""
    order = sorted(replicas, key=lambda r: (r.ready, -r.created_at))
    return [r.id for r in order[: max(n, 0)]]


def _steady(replicas: list[ReplicaView], target: str, desired: int) -> tuple[int, list[str]]:
    live = [r for r in replicas if r.generation == target and not r.failed]
    if len(live) < desired:
        return desired - len(live), []
    return 0, _surplus(live, len(live) - desired)


def plan_group(
    group: str,
    generation: str,
    desired: int,
    replicas: list[ReplicaView],
    now: float,
    deadline: float,
    failed_generation: str | None = None,
    fallback_generation: str | None = None,
    new_failures: int = 0,
    max_new_failures: int = 1,
    rollout: RolloutReport | None = None,
) -> GroupPlan:
    """Decide one tick for one group.

    `generation` is the group's registered generation; `failed_generation` is a generation whose
    rollout already failed (then `fallback_generation`, the version still serving, is what gets
    started); `new_failures` counts replicas of the new generation that failed during the rollout;
    `rollout` is the group's last report, which this tick may have to finish.
    """
    failed_ids = [r.id for r in replicas if r.failed]
    live = [r for r in replicas if not r.failed]

    if failed_generation == generation and fallback_generation is not None:
        start, extra = _steady(replicas, fallback_generation, desired)
        strays = [r.id for r in live if r.generation != fallback_generation]
        served = sum(1 for r in live if r.generation == fallback_generation and r.ready)
        report = RolloutReport(
            group, fallback_generation, generation, "failed", 0, desired,
            f"new version {generation[:8]} did not get ready; version {fallback_generation[:8]} keeps serving ({served} ready)",
        )
        return GroupPlan(start, fallback_generation, tuple(failed_ids + strays + extra), report, None)

    new = [r for r in live if r.generation == generation]
    old = [r for r in live if r.generation != generation]
    if not old:
        start, extra = _steady(replicas, generation, desired)
        return GroupPlan(start, generation, tuple(failed_ids + extra), _without_old(rollout, generation, desired, new), None)

    old_gen = max(old, key=lambda r: r.created_at).generation
    new_ready = [r for r in new if r.ready]
    pending = [r for r in new if not r.ready]
    timed_out = [r for r in pending if now - r.created_at > deadline]
    crashed_new = sum(1 for r in replicas if r.failed and r.generation == generation)
    if new_failures + crashed_new >= max_new_failures or timed_out:
        why = "did not get ready before the deadline" if timed_out else "crashed while starting"
        report = RolloutReport(
            group, old_gen, generation, "failed", len(new_ready), desired,
            f"new version {generation[:8]} {why}; version {old_gen[:8]} keeps serving",
        )
        stop = [r.id for r in new] + failed_ids
        return GroupPlan(0, old_gen, tuple(dict.fromkeys(stop)), report, generation)

    stop = list(failed_ids)
    start = 0
    if not pending:
        if len(new_ready) >= desired:
            stop += [r.id for r in old]
        else:
            # One new replica is ready: retire one old replica for it, and surge the next new one.
            excess = len(new_ready) + len(old) - desired
            if excess > 0:
                stop += _surplus(old, excess)
            start = 1
    state: RolloutState = "done" if len(new_ready) >= desired and not pending else "running"
    report = RolloutReport(
        group, old_gen, generation, state, len(new_ready), desired,
        f"{len(new_ready)}/{desired} replicas updated to {generation[:8]}",
    )
    return GroupPlan(start, generation, tuple(stop), report, None)


def _without_old(rollout: RolloutReport | None, generation: str, desired: int,
                 new: list[ReplicaView]) -> RolloutReport | None:
    """A running rollout to `generation` whose old version has no live replica left.

    That happens when the old replicas had all failed or were being stopped at the PUT (a wrong
    registry password corrected while its last replicas were stopping): the surge-and-drain steps
    never see an old replica, so without this the report stayed "running" and `up` waited for it
    until its timeout. The rollout is done once the new version has the desired count ready.
    """
    if rollout is None or rollout.state != "running" or rollout.to_generation != generation:
        return None
    ready = sum(1 for r in new if r.ready)
    state: RolloutState = "done" if ready >= desired else "running"
    return RolloutReport(rollout.group, rollout.from_generation, generation, state, ready, desired,
                         f"{ready}/{desired} replicas updated to {generation[:8]}; no replica of "
                         f"{rollout.from_generation[:8]} was left to replace")
