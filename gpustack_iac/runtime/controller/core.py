"""The context every controller step shares: the live records (live.py) by name, the store, the
gateway's routing table and counters, agent clients, the lock, and the few queries over them.

Every piece of the controller (agent polling, probing, replica start and stop, scaling, routing,
logs, registrations) is a function of this one object, so they see the same dictionaries and the
same lock; the `Controller` facade in `reconcile.py` is a subclass that adds the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gpustack_iac.runtime.client import AgentClient
from gpustack_iac.runtime.controller.model import GroupDef, RouterDef
from gpustack_iac.runtime.controller.placement import Reservation, reservation_for
from gpustack_iac.runtime.controller.settings import ControllerSettings
from gpustack_iac.runtime.controller.live import AgentState, ReplicaState, ServiceState
from gpustack_iac.runtime.controller.store import ServiceRecord, Store
from gpustack_iac.runtime.gateway.metrics import Metrics, ServiceLoad
from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute
from gpustack_iac.runtime.tunnels import HostTunnels


class ControllerCore:
    def __init__(
        self,
        store: Store,
        table: RoutingTable,
        metrics: Metrics,
        settings: ControllerSettings = ControllerSettings(),  # noqa: B008 - frozen: one shared default is safe
        clock: Callable[[], float] = time.monotonic,
        tunnel_dir: Path | None = None,
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
        self.published: dict[str, ServiceRoute] = {}
        self.stop_tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.lock = asyncio.Lock()  # one tick or one registration change at a time
        self.load: dict[str, ServiceLoad] = {}  # the gateway's counters, read once per tick
        self.tunnel_dir = tunnel_dir or Path(".")  # where tunnels keep their known_hosts files
        self.tunnels: dict[str, HostTunnels] = {}  # SSH fleet agents, by name
        self.draining: set[str] = set()  # agents being removed: nothing new is placed there

    def map_url(self, agent: str, url: str | None) -> str | None:
        """A replica URL as this process reaches it: through the host's tunnel for SSH fleet agents."""
        tunnels = self.tunnels.get(agent)
        return url if tunnels is None else tunnels.map_url(url)

    def wake(self) -> None:
        self._wake.set()

    def endpoint(self, name: str) -> str:
        return f"{self.public_url}/services/{name}"

    def save_service(self, st: ServiceState) -> None:
        self.store.put_service(ServiceRecord(st.definition, st.previous, st.rollout_json()))

    def forget(self, r: ReplicaState) -> None:
        self.replicas.pop(r.id, None)
        self.store.delete_placement(r.id)

    def group_of_generation(self, st: ServiceState, group: str, generation: str) -> GroupDef | None:
        for d in (st.definition, st.previous):
            g = d.group(group) if d is not None else None
            if g is not None and g.generation == generation:
                return g
        return None

    def taken(self) -> dict[str, list[Reservation]]:
        """Resources held per agent by the replicas placed there (all services)."""
        taken: dict[str, list[Reservation]] = {}
        for r in self.replicas.values():
            st = self.services.get(r.record.service)
            g = self.group_of_generation(st, r.record.group, r.record.generation) if st else None
            if g is None and st is not None:
                g = st.definition.group(r.record.group)
            if g is None:
                continue
            taken.setdefault(r.record.agent, []).append(reservation_for(g.resources, r.record.gpus, g.host_port))
        return taken

