"""The controller: one reconcile loop that keeps every registered service at its desired replicas.

Each tick: ask every agent what runs, probe the replicas, decide per group how many replicas it
needs (fixed count or autoscaler), start / stop / roll out, and publish the ready replicas to the
gateway's RoutingTable (same process, same event loop). Registrations and placements are written
to SQLite before anything is started, so a restarted process re-adopts what runs instead of
duplicating it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, AsyncIterator, Callable

import aiohttp

from gpustack_iac.errors import GpustackError, RuntimeApiError
from gpustack_iac.runtime.autoscaler import ServiceAutoscaler
from gpustack_iac.runtime.client import AgentClient
from gpustack_iac.runtime.controller.model import (
    GroupDef,
    RouterDef,
    ServiceDef,
    ServiceDefinitionError,
    effective_scaling,
)
from gpustack_iac.runtime.controller.placement import (
    AgentView,
    Assignment,
    HostFacts,
    Reservation,
    place,
    reservation_for,
)
from gpustack_iac.runtime.controller.probes import probe_replica
from gpustack_iac.runtime.controller.rollout import ReplicaView, RolloutReport, plan_group
from gpustack_iac.runtime.controller.state import CRASHED_STATES, AgentState, ReplicaState, ServiceState
from gpustack_iac.runtime.controller.store import AgentRecord, PlacementRecord, ServiceRecord, Store
from gpustack_iac.runtime.gateway.metrics import Metrics, ServiceLoad
from gpustack_iac.runtime.gateway.routing import RouterMember, RouterRoute, RoutingTable, ServiceRoute, Upstream
from gpustack_iac.runtime.scaling.config import GroupConfig, LoadSample, ScalingConfig, Tuning

log = logging.getLogger("gpustack_iac.controller")


class UnknownServiceError(RuntimeApiError):
    """The control API was asked about a service that is not registered."""


class UnknownAgentError(RuntimeApiError):
    """The control API was asked about an agent that is not registered."""


class UnknownRouterError(RuntimeApiError):
    """The control API was asked about a router that is not registered."""


@dataclass(frozen=True)
class ControllerSettings:
    interval: float = 1.0  # seconds between reconcile ticks (a change wakes the loop at once)
    probe_interval: float = 1.0  # when the service's probe does not say
    probe_failures: int = 3  # failed liveness probes in a row before a ready replica is replaced
    startup_deadline: float = 120.0  # a new replica must be ready within this (rollout failure past it)
    drain_seconds: float = 2.0  # a replica leaves routing this long before it gets SIGTERM
    stop_grace: float = 10.0  # SIGTERM to SIGKILL, passed to the agent
    host_refresh: float = 30.0  # seconds between GET /v1/host of a healthy agent
    max_backoff: float = 30.0  # ceiling of the delay between replacements in a crash loop
    agent_timeout: float = 5.0  # seconds for one agent call (listing, stop); start and host take longer
    orphan_retries: int = 120  # attempts to stop a deleted service's replica on an unreachable agent
    orphan_retry_interval: float = 5.0
    tuning: Tuning = field(default_factory=Tuning)  # the autoscaler's windows (not part of the YAML)


class Controller:
    def __init__(
        self,
        store: Store,
        table: RoutingTable,
        metrics: Metrics,
        settings: ControllerSettings = ControllerSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.table = table
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.public_url = ""  # the data plane's base URL, set once it listens
        self.agents: dict[str, AgentState] = {}
        self.clients: dict[str, AgentClient] = {}
        self.services: dict[str, ServiceState] = {}
        self.routers: dict[str, RouterDef] = {}
        self.replicas: dict[str, ReplicaState] = {}
        self._published: dict[str, ServiceRoute] = {}
        self._stop_tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()  # one tick or one registration change at a time
        self._load: dict[str, ServiceLoad] = {}  # the gateway's counters, read once per tick

    # ----------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Load the registrations from the store, re-adopt placed replicas, start the loop."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        now = self.clock()
        for rec in self.store.agents():
            await self._open_agent(rec)
        for srec in self.store.services():
            st = ServiceState(definition=srec.definition, previous=srec.previous)
            if srec.rollout:
                st.rollouts = {g: RolloutReport(**r) for g, r in srec.rollout.get("groups", {}).items()}
                st.failed_generation = dict(srec.rollout.get("failed_generation", {}))
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
        for task in list(self._stop_tasks.values()):
            task.cancel()
        for task in list(self._stop_tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.clients.clear()
        if self._session is not None:
            await self._session.close()

    def wake(self) -> None:
        self._wake.set()

    def on_demand(self, service: str) -> None:
        """The gateway holds a request for `service`, which has no ready replica: start one now."""
        st = self.services.get(service)
        if st is not None:
            st.demand = True
            self.wake()

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad tick must not stop the controller; the next tick retries
                log.exception("reconcile tick failed")
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.interval)

    # ----------------------------------------------------------------------------- registrations
    async def put_agent(self, name: str, url: str, token: str, labels: dict[str, Any]) -> None:
        async with self._lock:
            rec = AgentRecord(name=name, url=url.rstrip("/"), token=token, labels=dict(labels))
            self.store.put_agent(rec)
            await self._open_agent(rec)
            await self._refresh_agent(self.agents[name], force_host=True)
        self.wake()

    async def delete_agent(self, name: str) -> None:
        async with self._lock:
            if name not in self.agents:
                raise UnknownAgentError(f"agent {name!r} is not registered")
            self.store.delete_agent(name)
            self.agents.pop(name)
            client = self.clients.pop(name, None)
            # Its replicas can no longer be managed: stop them while the agent may still answer
            # (best effort, the host is probably going away), then place them elsewhere.
            for r in [r for r in self.replicas.values() if r.record.agent == name]:
                if client is not None:
                    with contextlib.suppress(GpustackError):
                        await client.stop(r.id, min(self.settings.stop_grace, 2.0))
                self._forget(r)
        self.wake()

    async def put_service(self, definition: ServiceDef) -> str:
        async with self._lock:
            st = self.services.get(definition.name)
            if st is None:
                st = ServiceState(definition=definition)
                self.services[definition.name] = st
            elif st.definition.generation != definition.generation or st.definition != definition:
                old = st.definition
                for g in definition.groups:
                    prev = old.group(g.name)
                    if prev is not None and prev.generation != g.generation:
                        # A new version of the group: the running one becomes the fallback.
                        st.previous = old
                        st.new_failures.pop(g.name, None)
                        st.crash_streak.pop(g.name, None)
                        st.backoff_until.pop(g.name, None)
                        if st.failed_generation.get(g.name) not in (None, g.generation):
                            st.failed_generation.pop(g.name, None)
                        if st.failed_generation.get(g.name) != g.generation and any(
                            r.record.service == definition.name and r.record.group == g.name for r in self.replicas.values()
                        ):
                            # Shown at once, so a caller polling status right after the PUT does
                            # not mistake the old version's ready replicas for the new one's.
                            st.rollouts[g.name] = RolloutReport(
                                g.name, prev.generation, g.generation, "running", 0,
                                st.desired.get(g.name, g.replicas.min), f"rolling out {g.generation[:8]}",
                            )
                st.definition = definition
            self._save_service(st)
            # Known to the gateway at once (requests are held or get "no ready replica", not 404).
            self._publish_routes()
        self.wake()
        return self.endpoint(definition.name)

    async def delete_service(self, name: str) -> None:
        async with self._lock:
            st = self.services.pop(name, None)
            if st is None:
                raise UnknownServiceError(f"service {name!r} is not registered")
            self.table.remove_service(name)
            self._published.pop(name, None)
            victims = [r for r in self.replicas.values() if r.record.service == name]
            for r in victims:
                r.stopping = True
            await asyncio.gather(*(self._stop_replica(r, drain=False) for r in victims), return_exceptions=True)
            for r in victims:
                if r.id in self.replicas:
                    # Its agent did not answer: nothing tracks the replica once the service is
                    # gone, so a background task keeps trying to stop it (bounded).
                    self.replicas.pop(r.id, None)
                    if r.id not in self._stop_tasks:
                        self._stop_tasks[r.id] = asyncio.create_task(
                            self._stop_orphan(r.record.agent, r.id, attempts=self.settings.orphan_retries)
                        )
            self.store.delete_service(name)
            self.metrics.forget_service(name)

    async def put_router(self, router: RouterDef) -> None:
        route = router_route(router)  # validates the strategy and the numbers before anything is stored
        async with self._lock:
            self.store.put_router(router)
            self.routers[router.name] = router
            self.table.set_router(route)

    async def delete_router(self, name: str) -> None:
        async with self._lock:
            if self.routers.pop(name, None) is None:
                raise UnknownRouterError(f"router {name!r} is not registered")
            self.store.delete_router(name)
            self.table.remove_router(name)

    def endpoint(self, name: str) -> str:
        return f"{self.public_url}/services/{name}"

    def _save_service(self, st: ServiceState) -> None:
        self.store.put_service(ServiceRecord(st.definition, st.previous, st.rollout_json()))

    # --------------------------------------------------------------------------------- the tick
    async def reconcile_once(self) -> None:
        async with self._lock:
            now = self.clock()
            await asyncio.gather(*(self._refresh_agent(a) for a in self.agents.values()))
            self._sync_replicas(now)
            await self._probe_all(now)
            self._load = self.metrics.snapshot()
            for st in list(self.services.values()):
                try:
                    await self._reconcile_service(st, now)
                except GpustackError as exc:
                    # One service's problem (e.g. a scaling rule the autoscaler refuses) must not
                    # stall the others; it is shown in that service's status.
                    st.messages["*"] = str(exc)
                    log.warning("service %s: %s", st.definition.name, exc)
            self._publish_routes()

    async def _open_agent(self, rec: AgentRecord) -> None:
        # The pooled session is the controller's: every agent call shares its connections.
        self.clients[rec.name] = AgentClient(rec.url, rec.token, session=self._session, timeout=self.settings.agent_timeout)
        prev = self.agents.get(rec.name)
        self.agents[rec.name] = AgentState(record=rec, host=prev.host if prev else None)

    async def _refresh_agent(self, agent: AgentState, force_host: bool = False) -> None:
        client = self.clients.get(agent.record.name)
        if client is None:
            return
        now = self.clock()
        try:
            if force_host or agent.host is None or now - agent.host_checked_at > self.settings.host_refresh:
                agent.host = HostFacts.from_json(_as_dict(await client.host()))
                agent.host_checked_at = now
            listing = [_as_dict(r) for r in await client.list()]
            agent.listing = {str(r["id"]): r for r in listing}
            agent.healthy = True
            agent.error = ""
        except GpustackError as exc:
            agent.healthy = False
            agent.listing = None
            agent.error = str(exc) or type(exc).__name__

    def _sync_replicas(self, now: float) -> None:
        for r in list(self.replicas.values()):
            agent = self.agents.get(r.record.agent)
            if agent is None:
                self._forget(r)
                continue
            if agent.listing is None:
                continue  # agent unreachable: the replica may well keep serving; probes decide
            info = agent.listing.get(r.id)
            if info is None:
                if r.agent_state != "pending" or now - r.created_mono > self.settings.startup_deadline:
                    # The agent no longer knows it (its state was lost): place a new one.
                    r.failed = True
                    r.ready = False
                    r.detail = "unknown to its agent"
                continue
            r.url = info.get("url") or (f"http://127.0.0.1:{info['port']}" if info.get("port") else r.url)
            r.pid = info.get("pid")
            restarts = int(info.get("restarts") or 0)
            # The agent may restart a crashed process between two listings; a higher restart
            # count is the same crash seen late. (Unknown before the first listing of this process.)
            restarted = r.agent_state != "adopting" and r.agent_state != "pending" and restarts > r.restarts
            r.agent_state = str(info.get("state", "unknown"))
            r.restarts = restarts
            r.exit_code = info.get("exit_code")
            if (r.agent_state in CRASHED_STATES or restarted) and not r.stopping:
                r.ready = False
                r.failed = True
                r.detail = f"process {'restarted' if restarted else r.agent_state} (exit code {r.exit_code})"
        # Replicas of our services that an agent runs but the store does not know (a crash between
        # the agent's start and our bookkeeping) would be duplicates: stop them.
        known = set(self.replicas)
        for agent in self.agents.values():
            for rid, info in (agent.listing or {}).items():
                labels = info.get("labels") or {}
                if (
                    rid not in known
                    and labels.get("gpustack.service") in self.services
                    and info.get("state") != "stopped"
                    and rid not in self._stop_tasks
                ):
                    self._stop_tasks[rid] = asyncio.create_task(self._stop_orphan(agent.record.name, rid))

    async def _probe_all(self, now: float) -> None:
        assert self._session is not None
        due = [
            r
            for r in self.replicas.values()
            if r.url
            and r.record.service in self.services
            and not (r.failed or r.stopping)
            and r.agent_state not in CRASHED_STATES
            and now >= r.next_probe_at
        ]
        probes = {r.id: self.services[r.record.service].definition.probe for r in due}
        results = await asyncio.gather(*(probe_replica(self._session, r.url or "", probes[r.id]) for r in due))
        for r, res in zip(due, results):
            probe = probes[r.id]
            interval = probe.interval if probe is not None else self.settings.probe_interval
            r.next_probe_at = now + (interval if r.ready else min(interval, self.settings.interval))
            r.detail = f"probe: {res.detail}"
            if res.ok:
                r.ready = True
                r.probe_failures = 0
            elif r.ready:
                r.probe_failures += 1
                if r.probe_failures >= self.settings.probe_failures:
                    r.ready = False
                    r.failed = True
                    r.detail = f"failed {r.probe_failures} liveness probes ({res.detail})"
            elif now - r.created_mono > self.settings.startup_deadline:
                r.failed = True
                r.detail = f"not ready after {self.settings.startup_deadline:g}s ({res.detail})"

    # ------------------------------------------------------------------------------ one service
    def desired_counts(self, service: str, now: float) -> dict[str, int]:
        """Replicas wanted per group: the fixed count, or the autoscaler's decision for ranges."""
        st = self.services[service]
        groups = st.definition.groups
        if all(g.replicas.fixed for g in groups):
            return {g.name: g.replicas.min for g in groups}
        scaler = self._autoscaler(st)
        load = self._load.get(service)
        scaler.observe(
            LoadSample(
                at=now,
                requests_total=load.requests_total if load else 0,
                in_flight=load.in_flight if load else 0,
                waiting=load.waiting if load else 0,
            )
        )
        ready = {g.name: 0 for g in groups}
        for r in self.replicas.values():
            if r.record.service == service and r.routable:
                ready[r.record.group] = ready.get(r.record.group, 0) + 1
        decided = scaler.decide(ready, set(st.no_capacity))
        out = {g.name: max(g.replicas.min, min(g.replicas.max, int(decided.get(g.name, g.replicas.min)))) for g in groups}
        if st.demand and sum(out.values()) == 0:
            # A request is held at the gateway: start one replica in the first group that can take it.
            for g in groups:
                if g.replicas.max > 0 and g.name not in st.no_capacity:
                    out[g.name] = 1
                    break
        return out

    def _autoscaler(self, st: ServiceState) -> ServiceAutoscaler:
        d = st.definition
        key = tuple((g.name, g.replicas, effective_scaling(d, g)) for g in d.groups) + (d.scaling,)
        if st.autoscaler is None or st.autoscaler_key != key:
            configs = [
                GroupConfig(name=g.name, min=g.replicas.min, max=g.replicas.max, scaling=_scaling(g.scaling))
                for g in d.groups
            ]
            if st.autoscaler is None:
                st.autoscaler = ServiceAutoscaler(configs, _scaling(d.scaling), clock=self.clock, tuning=self.settings.tuning)
            else:
                # Range or scaling changes apply in place, keeping the load history; no restart.
                st.autoscaler.reconfigure(configs, _scaling(d.scaling))
            st.autoscaler_key = key
        return st.autoscaler

    async def _reconcile_service(self, st: ServiceState, now: float) -> None:
        d = st.definition
        desired = self.desired_counts(d.name, now)
        st.desired = desired
        if any(r.record.service == d.name and r.routable for r in self.replicas.values()):
            st.demand = False
        changed = False
        for g in d.groups:
            mine = [
                r
                for r in self.replicas.values()
                if r.record.service == d.name and r.record.group == g.name and not r.stopping
            ]
            views = [ReplicaView(r.id, r.record.generation, r.ready, r.failed, r.created_mono) for r in mine]
            fallback = self._fallback_generation(st, g, mine)
            plan = plan_group(
                g.name,
                g.generation,
                desired.get(g.name, 0),
                views,
                now,
                self.settings.startup_deadline,
                failed_generation=st.failed_generation.get(g.name),
                fallback_generation=fallback,
                new_failures=st.new_failures.get(g.name, 0),
            )
            rolling = any(r.record.generation != g.generation for r in mine)
            for rid in plan.stop:
                r = self.replicas.get(rid)
                if r is None:
                    continue
                if r.failed and r.record.generation == g.generation and rolling:
                    st.new_failures[g.name] = st.new_failures.get(g.name, 0) + 1
                if r.failed:
                    st.crash_streak[g.name] = st.crash_streak.get(g.name, 0) + 1
                    st.last_failure[g.name] = now
                    delay = min(self.settings.max_backoff, 0.5 * 2 ** (st.crash_streak[g.name] - 1))
                    st.backoff_until[g.name] = now + delay
                    st.messages[g.name] = f"replica {r.id} {r.detail}; replacing it in {delay:g}s"
                self._begin_stop(r)
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
            target_def = g if plan.target == g.generation else self._group_of_generation(st, g.name, plan.target)
            if plan.start > 0 and target_def is not None and now >= st.backoff_until.get(g.name, 0.0):
                await self._start_replicas(st, target_def, plan.start, now)
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
        for r in [r for r in self.replicas.values() if r.record.service == d.name and r.record.group not in names]:
            if not r.stopping:
                self._begin_stop(r)
        if changed:
            self._save_service(st)

    def _fallback_generation(self, st: ServiceState, g: GroupDef, mine: list[ReplicaState]) -> str | None:
        others = [r.record.generation for r in mine if r.record.generation != g.generation]
        if others:
            return others[0]
        prev = st.previous.group(g.name) if st.previous else None
        return prev.generation if prev is not None and prev.generation != g.generation else None

    def _group_of_generation(self, st: ServiceState, group: str, generation: str) -> GroupDef | None:
        for d in (st.definition, st.previous):
            g = d.group(group) if d is not None else None
            if g is not None and g.generation == generation:
                return g
        return None

    async def _start_replicas(self, st: ServiceState, g: GroupDef, count: int, now: float) -> None:
        d = st.definition
        views = [
            AgentView(name=a.record.name, host=a.host, labels=a.record.labels, healthy=a.healthy)
            for a in self.agents.values()
        ]
        for _ in range(count):
            taken = self.taken()
            spread: dict[str, int] = {}
            for r in self.replicas.values():
                if r.record.service == d.name and r.record.group == g.name and not r.stopping:
                    spread[r.record.agent] = spread.get(r.record.agent, 0) + 1
            got = place(g, views, taken, spread)
            if not isinstance(got, Assignment):
                st.no_capacity.add(g.name)
                st.messages[g.name] = f"no capacity: {got.message()}"
                return
            st.no_capacity.discard(g.name)
            st.messages.pop(g.name, None)
            await self._start_one(st, g, got, now)

    def taken(self) -> dict[str, list[Reservation]]:
        """Resources held per agent by the replicas placed there (all services)."""
        taken: dict[str, list[Reservation]] = {}
        for r in self.replicas.values():
            st = self.services.get(r.record.service)
            g = self._group_of_generation(st, r.record.group, r.record.generation) if st else None
            if g is None and st is not None:
                g = st.definition.group(r.record.group)
            if g is None:
                continue
            taken.setdefault(r.record.agent, []).append(reservation_for(g.resources, r.record.gpus))
        return taken

    async def _start_one(self, st: ServiceState, g: GroupDef, a: Assignment, now: float) -> None:
        d = st.definition
        prefix = f"{d.name}-{g.name}-{g.generation[:8]}"
        rid = f"{prefix}-{self.store.next_index(prefix)}"
        rec = PlacementRecord(rid, d.name, g.name, g.generation, a.agent, a.reservation.gpus, time.time())
        # Recorded before the agent hears of it: a crash in between leaves a placement to re-adopt
        # (or to find missing), never an unknown process.
        self.store.put_placement(rec)
        r = ReplicaState(record=rec, created_mono=now)
        self.replicas[rid] = r
        spec = {
            "id": rid,
            "service": d.name,
            "group": g.name,
            "commands": list(g.commands),
            "env": dict(g.env),
            "working_dir": g.working_dir,
            "image": g.image,
            "gpus": list(a.reservation.gpus),
            "labels": {"gpustack.service": d.name, "gpustack.group": g.name, "gpustack.generation": g.generation},
        }
        try:
            info = _as_dict(await self.clients[a.agent].start(spec))
        except GpustackError as exc:
            r.failed = True
            r.detail = f"start failed: {exc}"
            st.messages[g.name] = f"start on {a.agent} failed: {exc}"
            return
        r.url = info.get("url") or r.url
        r.pid = info.get("pid")
        r.agent_state = str(info.get("state", "starting"))

    # ------------------------------------------------------------------------------- stopping
    def _begin_stop(self, r: ReplicaState) -> None:
        if r.stopping:
            return
        drain = r.ready and not r.failed
        r.stopping = True
        r.ready = False
        if r.id not in self._stop_tasks:
            self._stop_tasks[r.id] = asyncio.create_task(self._stop_later(r, drain))

    async def _stop_later(self, r: ReplicaState, drain: bool) -> None:
        try:
            self._publish_routes()  # out of routing before the drain starts
            await self._stop_replica(r, drain)
        finally:
            self._stop_tasks.pop(r.id, None)

    async def _stop_replica(self, r: ReplicaState, drain: bool) -> None:
        if drain:
            await asyncio.sleep(self.settings.drain_seconds)
        client = self.clients.get(r.record.agent)
        if client is not None:
            try:
                await client.stop(r.id, self.settings.stop_grace)  # None when the agent no longer has it
            except GpustackError as exc:
                # The agent is unreachable: keep the placement; a later tick stops it again.
                r.detail = f"stop failed: {exc}"
                r.stopping = False
                r.failed = True
                return
        self._forget(r)

    async def _stop_orphan(self, agent: str, rid: str, attempts: int = 1) -> None:
        """Stop a replica nobody tracks any more, retrying (bounded) while its agent is unreachable."""
        try:
            for attempt in range(attempts):
                client = self.clients.get(agent)
                if client is None:
                    return
                try:
                    await client.stop(rid, self.settings.stop_grace)
                    return
                except GpustackError as exc:
                    log.warning("stopping %s on %s failed (%s); attempt %d of %d", rid, agent, exc, attempt + 1, attempts)
                if attempt + 1 < attempts:
                    await asyncio.sleep(self.settings.orphan_retry_interval)
        finally:
            self._stop_tasks.pop(rid, None)

    def _forget(self, r: ReplicaState) -> None:
        self.replicas.pop(r.id, None)
        self.store.delete_placement(r.id)

    # -------------------------------------------------------------------------------- routing
    def _publish_routes(self) -> None:
        for name, st in self.services.items():
            d = st.definition
            ready = [r for r in self.replicas.values() if r.record.service == name and r.routable]
            ups = tuple(Upstream(r.id, r.record.group, r.url or "") for r in sorted(ready, key=lambda r: r.id))
            route = ServiceRoute(
                name=name,
                auth=d.auth,
                model=d.model.name if d.model else None,
                model_prefix=d.model.prefix if d.model else "/v1",
                upstreams=ups,
                min_replicas_zero=sum(g.replicas.min for g in d.groups) == 0,
            )
            if self._published.get(name) != route:
                self.table.set_service(route)
                self._published[name] = route

    # ------------------------------------------------------------------------------------ logs
    def log_sources(self, service: str, group: str | None, replica: str | None) -> list[tuple[str, str, AgentClient]]:
        """(replica id, agent, client) of the replicas chosen by group and by id or number."""
        if service not in self.services:
            raise UnknownServiceError(f"service {service!r} is not registered")
        out: list[tuple[str, str, AgentClient]] = []
        for r in sorted(self.replicas.values(), key=lambda r: r.id):
            if r.record.service != service or (group is not None and r.record.group != group):
                continue
            if replica is not None and r.id != replica and r.id.rsplit("-", 1)[-1] != replica:
                continue
            client = self.clients.get(r.record.agent)
            if client is not None:
                out.append((r.id, r.record.agent, client))
        return out

    async def logs(self, service: str, group: str | None, replica: str | None, tail: int) -> str:
        sources = self.log_sources(service, group, replica)
        parts: list[str] = []
        for rid, agent, client in sources:
            try:
                text = await client.logs(rid, tail)
            except GpustackError as exc:
                text = f"(logs unavailable: {exc})\n"
            if len(sources) > 1:
                parts.append(f"==> {rid} ({agent}) <==\n")
            parts.append(text if text.endswith("\n") or not text else text + "\n")
        return "".join(parts)

    async def follow_logs(self, service: str, group: str | None, replica: str | None, tail: int) -> AsyncIterator[bytes]:
        """Log output of the chosen replicas as it is written (lines prefixed with the replica id
        when there are several), until every replica is stopped or the caller stops reading."""
        sources = self.log_sources(service, group, replica)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)  # bounded: a slow reader slows the pumps

        async def pump(rid: str, client: AgentClient) -> None:
            prefix = f"[{rid}] ".encode() if len(sources) > 1 else b""
            pending = b""
            try:
                async for chunk in client.follow_logs(rid, tail):
                    if not prefix:
                        await queue.put(chunk)
                        continue
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        await queue.put(prefix + line + b"\n")
                if pending:
                    await queue.put(prefix + pending + b"\n")
            except GpustackError as exc:
                await queue.put(prefix + f"(logs unavailable: {exc})\n".encode())
            finally:
                await queue.put(None)

        tasks = [asyncio.create_task(pump(rid, client)) for rid, _agent, client in sources]
        try:
            finished = 0
            while finished < len(tasks):
                item = await queue.get()
                if item is None:
                    finished += 1
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

def router_route(router: RouterDef) -> RouterRoute:
    """The gateway's view of a router registration; ServiceDefinitionError when it refuses it."""
    try:
        return RouterRoute(
            name=router.name,
            strategy=router.strategy,  # type: ignore[arg-type] - checked by RouterRoute itself
            members=tuple(
                RouterMember(
                    service=m.service,
                    weight=m.weight,
                    priority=m.priority,
                    cost=m.cost if m.cost is not None else 0.0,
                    max_in_flight_per_replica=m.max_in_flight_per_replica,
                )
                for m in router.members
            ),
            auth=router.auth,
            fallbacks=router.fallbacks,
            retries=router.retries,
            cooldown_failures=router.cooldown_failures,
            cooldown_seconds=router.cooldown_seconds,
            ewma_alpha=router.ewma_alpha,
        )
    except ValueError as exc:
        raise ServiceDefinitionError(f"invalid router definition: {exc}") from exc


def _scaling(s: Any) -> ScalingConfig | None:
    if s is None:
        return None
    return ScalingConfig(metric=s.metric, target=s.target, scale_up_delay=s.scale_up_delay, scale_down_delay=s.scale_down_delay)


def _as_dict(value: Any) -> dict[str, Any]:
    """Agent answers as plain dicts, whether the client returns dicts or dataclasses."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "to_json"):
        return dict(value.to_json())
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise RuntimeApiError(f"unexpected agent answer: {type(value).__name__}")


