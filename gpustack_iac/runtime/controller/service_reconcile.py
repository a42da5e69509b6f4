"""One service on one tick: apply the rollout plan of each group (start, stop, back off after crashes).

`plan_group` (rollout.py) decides what each group needs; this module carries it out: counts the
failures of a rolling generation, delays replacements in a crash loop, starts replicas of the
target generation (the new one, or the previous one the rollout falls back to), and stops the
replicas of groups that left the definition. What it remembers of a group is its `GroupState`.
"""

from __future__ import annotations

from dataclasses import replace

from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.live import GroupState, ReplicaState, ServiceState
from gpustack_iac.runtime.controller.model import GroupDef
from gpustack_iac.runtime.controller.replica_counts import desired_counts
from gpustack_iac.runtime.controller.replica_start import start_replicas
from gpustack_iac.runtime.controller.replica_stop import begin_stop
from gpustack_iac.runtime.controller.rollout import GroupPlan, ReplicaView, plan_group


async def reconcile_service(core: ControllerCore, st: ServiceState, now: float) -> None:
    d = st.definition
    desired = desired_counts(core, d.name, now)
    for g in d.groups:
        st.group(g.name).desired = desired.get(g.name, 0)
    if any(r.record.service == d.name and r.routable for r in core.replicas.values()):
        st.demand = False
    st.error = None
    changed = False
    for g in d.groups:
        changed |= await _reconcile_group(core, st, g, now)
    # Groups removed from the definition: stop their replicas.
    names = {g.name for g in d.groups}
    for r in [r for r in core.replicas.values() if r.record.service == d.name and r.record.group not in names]:
        if not r.stopping:
            begin_stop(core, r)
    if changed:
        core.save_service(st)


async def _reconcile_group(core: ControllerCore, st: ServiceState, g: GroupDef, now: float) -> bool:
    """Carry out the group's plan for this tick; True when what the store keeps of it changed."""
    gs = st.group(g.name)
    mine = _counted_replicas(core, st.definition.name, g.name)
    views = [ReplicaView(r.id, r.record.generation, r.ready, r.failed, r.created_mono) for r in mine]
    plan = plan_group(g.name, g.generation, gs.desired or 0, views, now, core.settings.startup_deadline,
                      failed_generation=gs.failed_generation, fallback_generation=_fallback_generation(st, g, mine),
                      new_failures=gs.new_failures, rollout=gs.rollout)
    rolling = any(r.record.generation != g.generation for r in mine)
    for rid in plan.stop:
        r = core.replicas.get(rid)
        if r is not None:
            _account_stop(core, gs, g, r, rolling, now, plan.target)
            begin_stop(core, r)
    changed = _record(gs, plan)
    # The crash loop is over once a replica started after the last failure gets ready.
    if any(r.ready and r.record.generation == plan.target and r.created_mono >= gs.last_failure for r in mine):
        gs.crash_streak = 0
    target = g if plan.target == g.generation else core.group_of_generation(st, g.name, plan.target)
    if plan.start > 0 and target is not None and now >= gs.backoff_until:
        await start_replicas(core, st, target, plan.start, now)
        if gs.rollout is not None and gs.rollout.state == "running" and gs.no_capacity:
            # The surge replica has nowhere to go; the old version keeps serving meanwhile.
            gs.rollout = replace(gs.rollout, message=f"{gs.rollout.message}; waiting for capacity: {gs.message or ''}")
    elif plan.start == 0 and (gs.desired or 0) <= len(mine):
        gs.message, gs.no_capacity = None, False
    return changed


def _counted_replicas(core: ControllerCore, service: str, group: str) -> list[ReplicaState]:
    """The group's replicas that count towards its desired number."""
    return [
        r for r in core.replicas.values()
        if r.record.service == service and r.record.group == group and not r.stopping
        # A draining agent's replicas keep serving but no longer count: replacements start elsewhere.
        and r.record.agent not in core.draining
    ]


def _account_stop(core: ControllerCore, gs: GroupState, g: GroupDef, r: ReplicaState, rolling: bool, now: float,
                  target: str) -> None:
    """What stopping `r` says about the group: a failure of the new version, a lost host, a crash loop.

    Only failures of the `target` generation (the one the group heads to) make a crash loop: a
    replica of a version already replaced that crashes after the PUT (a wrong registry password
    just corrected, say) says nothing about the new one, and counting it failed that `up` at once."""
    if r.failed and r.record.generation == g.generation and rolling:
        gs.new_failures += 1
    agent = core.agents.get(r.record.agent)
    if r.failed and (agent is None or not agent.healthy):
        # Not a crash: its host stopped answering. Replace it now (elsewhere: placement skips
        # unhealthy agents), without the crash loop's back-off.
        gs.message = f"replica {r.id}: agent {r.record.agent} unreachable; replacing it on another host"
    elif r.failed and r.record.generation != target:
        gs.message = f"replica {r.id} of a replaced version {r.detail}; replacing it with the current one"
    elif r.failed:
        gs.crash_streak += 1
        gs.last_failure = now
        gs.last_failed = (r.id, r.record.agent)
        delay = min(core.settings.max_backoff, 0.5 * 2 ** (gs.crash_streak - 1))
        gs.backoff_until = now + delay
        gs.message = f"replica {r.id} {r.detail}; replacing it in {delay:g}s"


def _record(gs: GroupState, plan: GroupPlan) -> bool:
    changed = False
    if plan.failed_generation is not None:
        gs.failed_generation = plan.failed_generation
        changed = True
    if plan.rollout is not None and gs.rollout != plan.rollout:
        gs.rollout = plan.rollout
        changed = True
    return changed


def _fallback_generation(st: ServiceState, g: GroupDef, mine: list[ReplicaState]) -> str | None:
    others = [r.record.generation for r in mine if r.record.generation != g.generation]
    if others:
        return others[0]
    prev = st.previous.group(g.name) if st.previous else None
    return prev.generation if prev is not None and prev.generation != g.generation else None
