"""Registration changes from the control API: put or delete an agent, a service or a router.

Each change takes the controller's lock (never in the middle of a tick), is written to the store
first, and wakes the loop so the next tick acts on it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from gpustack_iac.contract.restart import rolls
from gpustack_iac.runtime.controller.agent_polling import open_agent, refresh_agent
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.errors import (
    UnknownAgentError,
    UnknownRouterError,
    UnknownServiceError,
)
from gpustack_iac.runtime.controller.model import RouterDef, ServiceDef
from gpustack_iac.runtime.controller.replica_stop import begin_stop, stop_orphan, stop_replica
from gpustack_iac.runtime.controller.rollout import RolloutReport
from gpustack_iac.runtime.controller.publish import publish_routes, router_route
from gpustack_iac.runtime.controller.live import ServiceState
from gpustack_iac.runtime.controller.store import AgentRecord


async def put_agent(core: ControllerCore, name: str, url: str, token: str, labels: dict[str, Any],
                    tunnel: dict[str, Any] | None = None) -> None:
    async with core.lock:
        rec = AgentRecord(name=name, url=url.rstrip("/"), token=token, labels=dict(labels), tunnel=tunnel)
        core.store.put_agent(rec)
        core.draining.discard(name)
        await open_agent(core, rec)
        await refresh_agent(core, core.agents[name], force_host=True)
    core.wake()


def _replaced(core: ControllerCore, name: str) -> bool:
    """Every group that `name` serves (a ready replica there) has its desired replicas ready on other
    agents, or has nowhere else to get them. A replica that is not ready serves no request, so it is
    not waited for: without this, removing a host whose replica never got ready (a stuck probe, an
    image that cannot be pulled) waited out the whole startup deadline (`destroy` took 2 minutes)."""
    if not any(a.healthy and other != name and other not in core.draining for other, a in core.agents.items()):
        return True  # no agent could take a replacement: waiting changes nothing
    for st in core.services.values():
        for g in st.definition.groups:
            ready = sum(1 for r in core.replicas.values() if r.record.service == st.definition.name
                        and r.record.group == g.name and r.record.agent != name and r.ready and not r.stopping)
            serving_on_it = any(r.record.service == st.definition.name and r.record.group == g.name
                                and r.record.agent == name and r.ready and not r.stopping for r in core.replicas.values())
            if serving_on_it and ready < st.desired(g.name):
                return False
    return True


async def delete_agent(core: ControllerCore, name: str) -> None:
    """Remove a host: its replicas are started elsewhere and ready before the ones on it stop
    (bounded by the startup deadline, after which they stop anyway), so no request fails."""
    await drain_agent(core, name)
    await forget_agent(core, name)


async def drain_agent(core: ControllerCore, name: str) -> None:
    """Cordon a host (nothing new is placed there) and move its replicas off it, under the same
    rule as a rollout: replacements ready elsewhere first, then the old ones drained and stopped.
    The agent stays registered (and cordoned), so it does not join again while its host goes."""
    async with core.lock:
        if name not in core.agents:
            raise UnknownAgentError(f"agent {name!r} is not registered")
        core.draining.add(name)
    core.wake()
    deadline = core.clock() + core.settings.startup_deadline
    while not _replaced(core, name) and core.clock() < deadline and core.agents.get(name) is not None:
        await asyncio.sleep(0.2)
    async with core.lock:
        mine = [r for r in core.replicas.values() if r.record.agent == name]
        for r in mine:
            begin_stop(core, r)  # out of routing, drained, then stopped through the agent
        tasks = [core.stop_tasks[r.id] for r in mine if r.id in core.stop_tasks]
    if tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, timeout=core.settings.drain_seconds + core.settings.stop_grace + 5)


async def forget_agent(core: ControllerCore, name: str) -> None:
    """Drop a (drained) agent's record, its replicas' records and its tunnels."""
    async with core.lock:
        core.store.delete_agent(name)
        core.agents.pop(name, None)
        core.clients.pop(name, None)
        core.draining.discard(name)
        for r in [r for r in core.replicas.values() if r.record.agent == name]:
            core.forget(r)
        tunnels = core.tunnels.pop(name, None)
    if tunnels is not None:
        await tunnels.close()
    core.wake()


async def put_service(core: ControllerCore, definition: ServiceDef) -> str:
    async with core.lock:
        st = core.services.get(definition.name)
        if st is None:
            st = ServiceState(definition=definition)
            core.services[definition.name] = st
        elif st.definition.generation != definition.generation or st.definition != definition:
            old = st.definition
            for g in definition.groups:
                prev = old.group(g.name)
                # The contract's restart rule: the generation moves exactly with what restarts replicas.
                if prev is not None and rolls(prev.generation, g.generation):
                    # A new version of the group: the running one becomes the fallback.
                    st.previous = old
                    gs = st.group(g.name)
                    gs.new_failures, gs.crash_streak, gs.backoff_until = 0, 0, 0.0
                    if gs.failed_generation not in (None, g.generation):
                        gs.failed_generation = None
                    if gs.failed_generation != g.generation and any(
                        r.record.service == definition.name and r.record.group == g.name for r in core.replicas.values()
                    ):
                        # Shown at once, so a caller polling status right after the PUT does
                        # not mistake the old version's ready replicas for the new one's.
                        gs.rollout = RolloutReport(
                            g.name, prev.generation, g.generation, "running", 0,
                            st.desired(g.name, g.replicas.min), f"rolling out {g.generation[:8]}",
                        )
            st.definition = definition
        core.save_service(st)
        # Known to the gateway at once (requests are held or get "no ready replica", not 404).
        publish_routes(core)
    core.wake()
    return core.endpoint(definition.name)


async def delete_service(core: ControllerCore, name: str) -> None:
    async with core.lock:
        st = core.services.pop(name, None)
        if st is None:
            raise UnknownServiceError(f"service {name!r} is not registered")
        core.table.remove_service(name)
        core.published.pop(name, None)
        victims = [r for r in core.replicas.values() if r.record.service == name]
        for r in victims:
            r.stopping = True
        await asyncio.gather(*(stop_replica(core, r, drain=False) for r in victims), return_exceptions=True)
        for r in victims:
            if r.id in core.replicas:
                # Its agent did not answer: nothing tracks the replica once the service is
                # gone, so a background task keeps trying to stop it (bounded).
                core.replicas.pop(r.id, None)
                if r.id not in core.stop_tasks:
                    core.stop_tasks[r.id] = asyncio.create_task(
                        stop_orphan(core, r.record.agent, r.id, attempts=core.settings.orphan_retries)
                    )
        core.store.delete_service(name)
        core.metrics.forget_service(name)


async def put_router(core: ControllerCore, router: RouterDef) -> None:
    route = router_route(router)  # validates the strategy and the numbers before anything is stored
    async with core.lock:
        core.store.put_router(router)
        core.routers[router.name] = router
        core.table.set_router(route)


async def delete_router(core: ControllerCore, name: str) -> None:
    async with core.lock:
        if core.routers.pop(name, None) is None:
            raise UnknownRouterError(f"router {name!r} is not registered")
        core.store.delete_router(name)
        core.table.remove_router(name)
