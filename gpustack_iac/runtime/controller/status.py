"""JSON views of the controller's state for the control API (`gpustack-iac status` reads them).

Agent tokens never appear here.
"""

from __future__ import annotations

from typing import Any

from gpustack_iac.runtime.controller.errors import UnknownRouterError, UnknownServiceError
from gpustack_iac.runtime.controller.reconcile import Controller
from gpustack_iac.runtime.controller.live import ReplicaState


def agents_json(c: Controller) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    taken = c.taken()
    for name, a in sorted(c.agents.items()):
        host = None
        free = None
        if a.host is not None:
            held = taken.get(name, [])
            used_gpus = {i for r in held for i in r.gpus}
            free = {
                "memory_bytes": max(a.host.memory_bytes - sum(r.memory_bytes for r in held), 0),
                "disk_bytes": max(a.host.disk_bytes - sum(r.disk_bytes for r in held), 0),
                "gpus": sum(1 for g in a.host.gpus if g.index not in used_gpus),
            }
            host = {
                "name": a.host.name,
                "cpus": a.host.cpus,
                "memory_bytes": a.host.memory_bytes,
                "disk_bytes": a.host.disk_bytes,
                "docker": a.host.docker,
                "gpus": [
                    {
                        "index": g.index,
                        "name": g.name,
                        "vendor": g.vendor,
                        "memory_bytes": g.memory_bytes,
                        "free": g.index not in used_gpus,
                    }
                    for g in a.host.gpus
                ],
            }
        out.append(
            {
                "name": name,
                "url": a.record.url,
                "labels": dict(a.record.labels),
                "host": host,
                "free": free,  # after the reservations of the replicas placed there
                "healthy": a.healthy,
                "error": a.error or None,
                "replicas": sum(1 for r in c.replicas.values() if r.record.agent == name),
            }
        )
    return out


def _replica_json(r: ReplicaState) -> dict[str, Any]:
    return {
        "id": r.id,
        "agent": r.record.agent,
        "generation": r.record.generation,
        "state": "stopping" if r.stopping else r.agent_state,  # the agent's word for the process
        "status": r.status.value,  # the controller's (live.ReplicaStatus)
        "ready": r.routable,
        "restarts": r.restarts,
        "url": r.url,
        "pid": r.pid,
        "gpus": list(r.record.gpus),
        "detail": r.detail,
    }


def service_json(c: Controller, name: str) -> dict[str, Any]:
    st = c.services.get(name)
    if st is None:
        raise UnknownServiceError(f"service {name!r} is not registered")
    d = st.definition
    groups = []
    for g in d.groups:
        mine = sorted(
            (r for r in c.replicas.values() if r.record.service == name and r.record.group == g.name), key=lambda r: r.id
        )
        groups.append(
            {
                "name": g.name,
                "generation": g.generation,
                "min": g.replicas.min,
                "max": g.replicas.max,
                "desired": st.desired(g.name, g.replicas.min),
                "ready": sum(1 for r in mine if r.routable),
                "message": st.group(g.name).message,
                # Read by `up`'s readiness wait, which stops at once on either instead of timing out.
                "no_capacity": st.group(g.name).no_capacity,
                "capacity": st.group(g.name).capacity,  # node groups the cloud could not grow (node_sizing.py)
                "crash_streak": st.group(g.name).crash_streak,
                "replicas": [_replica_json(r) for r in mine],
            }
        )
    rollout = None
    # A group removed from the definition keeps no rollout line.
    current = [gs.rollout for g, gs in st.groups.items() if gs.rollout is not None and d.group(g) is not None]
    if current:
        reports = [r.to_json() for r in current]
        states = {r.state for r in current}
        overall = "failed" if "failed" in states else "running" if "running" in states else "done"
        # One line for `up` and `status`: the failed groups' messages first.
        ordered = sorted(current, key=lambda r: r.state != "failed")
        message = "; ".join(f"{r.group}: {r.message}" for r in ordered)
        rollout = {"state": overall, "message": message, "groups": reports}
    return {
        "name": name,
        "endpoint": c.endpoint(name),
        "generation": d.generation,
        "auth": d.auth,
        "model": d.model.name if d.model else None,
        "groups": groups,
        "rollout": rollout,
        "error": st.error,
    }


def services_json(c: Controller) -> list[dict[str, Any]]:
    return [service_json(c, name) for name in sorted(c.services)]


def router_json(c: Controller, name: str) -> dict[str, Any]:
    router = c.routers.get(name)
    if router is None:
        raise UnknownRouterError(f"router {name!r} is not registered")
    traffic = c.metrics.router_snapshot().get(name, {})
    members = []
    for m in router.members:
        load = traffic.get(m.service)
        st = c.services.get(m.service)
        members.append(
            {
                "service": m.service,
                "registered": st is not None,
                "ready": sum(1 for r in c.replicas.values() if r.record.service == m.service and r.routable),
                "weight": m.weight,
                "priority": m.priority,
                "cost": m.cost,
                "requests": load.requests_total if load else 0,
                "in_flight": load.in_flight if load else 0,
                "errors": load.errors_total if load else 0,
                "ttfb_ewma_seconds": load.ttfb_ewma_seconds if load else None,
                "cooling_down": load.cooling_down if load else False,
            }
        )
    return {
        "name": name,
        "strategy": router.strategy,
        "auth": router.auth,
        "fallbacks": list(router.fallbacks),
        "endpoint": f"{c.public_url}/v1",
        "members": members,
    }


def routers_json(c: Controller) -> list[dict[str, Any]]:
    return [router_json(c, name) for name in sorted(c.routers)]
