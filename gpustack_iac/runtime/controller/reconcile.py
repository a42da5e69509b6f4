"""The controller: one reconcile loop that keeps every registered service at its desired replicas.

Each tick: ask every agent what runs, probe the replicas, decide per group how many replicas it
needs (fixed count or autoscaler), start / stop / roll out, and publish the ready replicas to the
gateway's RoutingTable (same process, same event loop). Registrations and placements are written
to SQLite before anything is started, so a restarted process re-adopts what runs instead of
duplicating it.

`Controller` is the facade the gateway process and the control API use: it owns the loop and the
tick's order, and delegates each step to its module (agent_polling, readiness, service_reconcile,
routes, registrations, logs) over the shared state in core.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.client import AgentClient
from gpustack_iac.runtime.controller import logs as replica_logs
from gpustack_iac.runtime.controller import registrations
from gpustack_iac.runtime.controller.agent_polling import (
    open_agent,
    refresh_agent,
    sync_replicas,
)
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.model import RouterDef, ServiceDef
from gpustack_iac.runtime.controller.node_sizing import Sizer, run_sizers
from gpustack_iac.runtime.controller.readiness import probe_all
from gpustack_iac.runtime.controller.replica_counts import desired_counts
from gpustack_iac.runtime.controller.publish import publish_routes, router_route
from gpustack_iac.runtime.controller.service_reconcile import reconcile_service
from gpustack_iac.runtime.controller.live import ReplicaState, ServiceState

log = logging.getLogger("gpustack_iac.controller")
# A tick normally takes milliseconds; one that takes longer than this is logged.
SLOW_TICK_S = 10.0


class Controller(ControllerCore):
    _loop_task: asyncio.Task[None] | None = None
    sizers: tuple[Sizer, ...] = ()  # node groups / Deployments to grow (node_sizing.py); set before start()

    # ----------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Load the registrations from the store, re-adopt placed replicas, start the loop."""
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        now = self.clock()
        for rec in self.store.agents():
            await open_agent(self, rec)
        for srec in self.store.services():
            st = ServiceState(definition=srec.definition, previous=srec.previous)
            if srec.rollout:
                st.restore_rollouts(srec.rollout)
            self.services[srec.definition.name] = st
        for p in self.store.placements():
            if p.service in self.services:
                # "adopting", not "pending": a recorded replica its agent does not list is gone
                # (a reboot, a lost agent state) and is replaced at once, not after the deadline.
                self.replicas[p.replica_id] = ReplicaState(record=p, created_mono=now, agent_state="adopting")
            else:
                self.store.delete_placement(p.replica_id)
        for router in self.store.routers():
            self.routers[router.name] = router
            self.table.set_router(router_route(router))
        self.table.on_demand(self.on_demand)
        # One tick before the caller starts listening: after a restart the routing table already
        # holds the re-adopted, re-probed replicas when the first request arrives.
        try:
            await self.reconcile_once()
        except GpustackError as exc:
            log.warning("first reconcile tick: %s", exc)
        self._loop_task = asyncio.create_task(self._run(), name="controller-reconcile")

    async def close(self) -> None:
        """Stop the loop; replicas keep running (a restarted controller re-adopts them)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self.stop_tasks.values()):
            task.cancel()
        for task in list(self.stop_tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sizer in self.sizers:
            with contextlib.suppress(Exception):  # a cloud client that fails to close must not stop the shutdown
                await sizer.close()
        self.clients.clear()
        for tunnels in list(self.tunnels.values()):
            await tunnels.close()
        self.tunnels.clear()
        if self.session is not None:
            await self.session.close()

    def on_demand(self, service: str) -> None:
        """The gateway holds a request for `service`, which has no ready replica: start one now."""
        st = self.services.get(service)
        if st is not None:
            st.demand = True
            self.wake()

    async def _run(self) -> None:
        while True:
            started = self.clock()
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad tick must not stop the controller; the next tick retries
                log.exception("reconcile tick failed")
            took = self.clock() - started
            if took > SLOW_TICK_S:
                # Probes, agent calls and node sizing wait inside the tick: one that waits this
                # long holds every replica's readiness back, so the log says so.
                log.warning("reconcile tick took %.1f s (agent calls, probes or node sizing were slow)", took)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.interval)

    # --------------------------------------------------------------------------------- the tick
    async def reconcile_once(self) -> None:
        async with self.lock:
            now = self.clock()
            await asyncio.gather(*(refresh_agent(self, a) for a in self.agents.values()))
            sync_replicas(self, now)
            await probe_all(self, now)
            self.load = self.metrics.snapshot()
            for st in list(self.services.values()):
                try:
                    await reconcile_service(self, st, now)
                except GpustackError as exc:
                    # One service's problem (e.g. a scaling rule the autoscaler refuses) must not
                    # stall the others; it is shown in that service's status.
                    st.error = str(exc)
                    log.warning("service %s: %s", st.definition.name, exc)
            publish_routes(self)
            await run_sizers(self, self.sizers, now)

    def desired_counts(self, service: str, now: float) -> dict[str, int]:
        """Replicas wanted per group: the fixed count, or the autoscaler's decision for ranges."""
        return desired_counts(self, service, now)

    # ----------------------------------------------------------------------------- registrations
    async def put_agent(self, name: str, url: str, token: str, labels: dict[str, Any], tunnel: dict[str, Any] | None = None) -> None:
        await registrations.put_agent(self, name, url, token, labels, tunnel)

    async def delete_agent(self, name: str) -> None:
        await registrations.delete_agent(self, name)

    async def put_service(self, definition: ServiceDef) -> str:
        return await registrations.put_service(self, definition)

    async def delete_service(self, name: str) -> None:
        await registrations.delete_service(self, name)

    async def put_router(self, router: RouterDef) -> None:
        await registrations.put_router(self, router)

    async def delete_router(self, name: str) -> None:
        await registrations.delete_router(self, name)

    # ------------------------------------------------------------------------------------ logs
    def log_sources(self, service: str, group: str | None, replica: str | None) -> list[tuple[str, str, AgentClient]]:
        """(replica id, agent, client) of the replicas chosen by group and by id or number."""
        return replica_logs.log_sources(self, service, group, replica)

    async def logs(self, service: str, group: str | None, replica: str | None, tail: int) -> str:
        return await replica_logs.logs(self, service, group, replica, tail)

    def follow_logs(self, service: str, group: str | None, replica: str | None, tail: int) -> AsyncIterator[bytes]:
        """Log output of the chosen replicas as it is written; see logs.follow_logs."""
        return replica_logs.follow_logs(self, service, group, replica, tail)
