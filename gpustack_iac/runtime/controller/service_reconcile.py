"""One service on one tick: apply the rollout plan of each group (start, stop, back off after crashes).

`plan_group` (rollout.py) decides what each group needs; this module carries it out: counts the
failures of a rolling generation, delays replacements in a crash loop, starts replicas of the
target generation (the new one, or the previous one the rollout falls back to), and stops the
replicas of groups that left the definition.
"""

from __future__ import annotations

from dataclasses import replace

from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.model import GroupDef
from gpustack_iac.runtime.controller.replica_counts import desired_counts
from gpustack_iac.runtime.controller.replica_start import start_replicas
from gpustack_iac.runtime.controller.replica_stop import begin_stop
from gpustack_iac.runtime.controller.rollout import ReplicaView, plan_group
from gpustack_iac.runtime.controller.live import ReplicaState, ServiceState


async def reconcile_service(core: ControllerCore, st: ServiceState, now: float) -> None:
    d = st.definition
    desired = desired_counts(core, d.name, now)
    st.desired = desired
    if any(r.record.service == d.name and r.routable for r in core.replicas.values()):
        st.demand = False
    changed = False
    for g in d.groups:
        mine = [
            r
            for r in core.replicas.values()
            if r.record.service == d.name and r.record.group == g.name and not r.stopping
        ]
        views = [ReplicaView(r.id, r.record.generation, r.ready, r.failed, r.created_mono) for r in mine]
        fallback = _fallback_generation(st, g, mine)
        plan = plan_group(
            g.name,
            g.generation,
            desired.get(g.name, 0),
            views,
            now,
            core.settings.startup_deadline,
            failed_generation=st.failed_generation.get(g.name),
            fallback_generation=fallback,
            new_failures=st.new_failures.get(g.name, 0),
        )
        rolling = any(r.record.generation != g.generation for r in mine)
        for rid in plan.stop:
            r = core.replicas.get(rid)
            if r is None:
                continue
            if r.failed and r.record.generation == g.generation and rolling:
                st.new_failures[g.name] = st.new_failures.get(g.name, 0) + 1
            if r.failed:
                st.crash_streak[g.name] = st.crash_streak.get(g.name, 0) + 1
                st.last_failure[g.name] = now
                st.last_failed[g.name] = (r.id, r.record.agent)
                delay = min(core.settings.max_backoff, 0.5 * 2 ** (st.crash_streak[g.name] - 1))
                st.backoff_until[g.name] = now + delay
                st.messages[g.name] = f"replica {r.id} {r.detail}; replacing it in {delay:g}s"
            begin_stop(core, r)
        if plan.failed_generation is not None:
            st.failed_generation[g.name] = plan.failed_generation
            changed = True
        if plan.rollout is not None and st.rollouts.get(g.name) != plan.rollout:
            st.rollouts[g.name] = plan.rollout
            changed = True
        # The crash loop is over once a replica started after the last failure gets ready.
        last_failure = st.last_failure.get(g.name, float("-inf"))
        if any(r.ready and r.record.generation == plan.target and r.created_mono >= last_failure for r in mine):
            st.crash_streak.pop(g.name, None)
        target_def = g if plan.target == g.generation else core.group_of_generation(st, g.name, plan.target)
        if plan.start > 0 and target_def is not None and now >= st.backoff_until.get(g.name, 0.0):
            await start_replicas(core, st, target_def, plan.start, now)
            report = st.rollouts.get(g.name)
            if report is not None and report.state == "running" and g.name in st.no_capacity:
                # The surge replica has nowhere to go; the old version keeps serving meanwhile.
                st.rollouts[g.name] = replace(
                    report, message=f"{report.message}; waiting for capacity: {st.messages.get(g.name, '')}"
                )
        elif plan.start == 0 and desired.get(g.name, 0) <= len(mine):
            st.messages.pop(g.name, None)
            st.no_capacity.discard(g.name)
    # Groups removed from the definition: stop their replicas.
    names = {g.name for g in d.groups}
    for r in [r for r in core.replicas.values() if r.record.service == d.name and r.record.group not in names]:
        if not r.stopping:
            begin_stop(core, r)
    if changed:
        core.save_service(st)


def _fallback_generation(st: ServiceState, g: GroupDef, mine: list[ReplicaState]) -> str | None:
    others = [r.record.generation for r in mine if r.record.generation != g.generation]
    if others:
        return others[0]
    prev = st.previous.group(g.name) if st.previous else None
    return prev.generation if prev is not None and prev.generation != g.generation else None
