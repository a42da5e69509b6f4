"""Starting replicas: place each on an agent with room for it, record the placement, ask the agent to start it.

The placement is written to the store before the agent hears of it, so a crash in between leaves
a placement to re-adopt (or to find missing), never an unknown process. When no agent has room
the group is marked "no capacity" with the reason, which the autoscaler and status read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.backoff import Backoff
from gpustack_iac.runtime.controller.agent_polling import as_dict
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.model import GroupDef, ServiceDef
from gpustack_iac.runtime.controller.placement import AgentView, Assignment, place
from gpustack_iac.runtime.controller.live import ReplicaState, ServiceState
from gpustack_iac.runtime.controller.store import PlacementRecord

# After a provider outage every group would ask again each tick; back off instead (the same policy
# as a task's retries), but only while every agent's facts are known: a just-registered agent
# that has not been reached yet is not "no capacity".
NO_CAPACITY_BACKOFF = Backoff(base=0.5, cap=15.0)

log = logging.getLogger("gpustack_iac.controller")


async def start_replicas(core: ControllerCore, st: ServiceState, g: GroupDef, count: int, now: float) -> None:
    d = st.definition
    views = [
        AgentView(name=a.record.name, host=a.host, labels=a.record.labels, healthy=a.healthy and a.record.name not in core.draining)
        for a in core.agents.values()
    ]
    for _ in range(count):
        taken = core.taken()
        spread: dict[str, int] = {}
        for r in core.replicas.values():
            if r.record.service == d.name and r.record.group == g.name and not r.stopping:
                spread[r.record.agent] = spread.get(r.record.agent, 0) + 1
        got = place(g, views, taken, spread)
        gs = st.group(g.name)
        if not isinstance(got, Assignment):
            gs.no_capacity = True
            gs.message = f"no capacity: {got.message()}"
            if all(v.host is not None for v in views):
                gs.no_capacity_streak += 1
                delay = NO_CAPACITY_BACKOFF.delay(gs.no_capacity_streak)
                gs.backoff_until = max(gs.backoff_until, now + delay)
                gs.message += f" (attempt {gs.no_capacity_streak}; next in {delay:.1f} s)"
            return
        gs.no_capacity, gs.no_capacity_streak, gs.message = False, 0, None
        await _start_one(core, st, g, got, now)


async def _start_one(core: ControllerCore, st: ServiceState, g: GroupDef, a: Assignment, now: float) -> None:
    d = st.definition
    prefix = f"{d.name}-{g.name}-{g.generation[:8]}"
    index = core.store.next_index(prefix)
    rid = f"{prefix}-{index}"
    rec = PlacementRecord(rid, d.name, g.name, g.generation, a.agent, a.reservation.gpus, time.time())
    # Recorded before the agent hears of it: a crash in between leaves a placement to re-adopt
    # (or to find missing), never an unknown process.
    core.store.put_placement(rec)
    r = ReplicaState(record=rec, created_mono=now)
    core.replicas[rid] = r
    spec = {
        "id": rid,
        "service": d.name,
        "group": g.name,
        "commands": list(g.commands),
        # dstack's replica number (from 0): the index within the group's generation, as the id carries it.
        "env": {"DSTACK_REPLICA_NUM": str(index - 1), **g.env},
        "working_dir": g.working_dir,
        "image": g.image,
        "gpus": list(a.reservation.gpus),
        "labels": {"gpustack.service": d.name, "gpustack.group": g.name, "gpustack.generation": g.generation},
        "mounts": [{"source": m.source, "target": m.target, "name": m.name} for m in g.mounts],
        "container": _container(d, g),
        "host_port": g.host_port,
    }
    try:
        info = as_dict(await core.clients[a.agent].start(spec))
    except GpustackError as exc:
        r.failed = True
        r.detail = f"start failed: {exc}"
        st.group(g.name).message = f"start on {a.agent} failed: {exc}"
        log.warning("replica %s: start on %s failed: %s", rid, a.agent, exc)
        return
    r.url = core.map_url(a.agent, info.get("url")) or r.url
    r.pid = info.get("pid")
    r.agent_state = str(info.get("state", "starting"))
    log.info("replica %s: started on %s (%s)", rid, a.agent, r.agent_state)


def _container(d: ServiceDef, g: GroupDef) -> dict[str, Any] | None:
    """The agent's container options: the service's declared port is where the container listens."""
    if g.image is None:
        return None
    c = g.container
    auth = c.registry_auth
    return {"port": d.port, "entrypoint": c.entrypoint, "user": c.user, "privileged": c.privileged, "shm_size": c.shm_size,
            "registry_auth": {"username": auth.username, "password": auth.password} if auth is not None else None}
