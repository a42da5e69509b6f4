"""The control plane's side of the HAProxy data plane: routing-table changes become Runtime API
calls (replicas) or a reload (services, auth, rate limits, models).

Changes are applied synchronously from the table's listener, on the gateway's event loop: when
`table.set_service(...)` returns, HAProxy already routes accordingly. A Runtime API call takes
well under a millisecond; a reload (rare: a new service) blocks the loop until the new worker
answers, typically tens of milliseconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from gpustack_iac.runtime.gateway.haproxy.process import HaproxyProcess
from gpustack_iac.runtime.gateway.haproxy.render import DataPlaneModel, Files, render_config, server_address, slot_count
from gpustack_iac.runtime.gateway.haproxy.runtime_api import RuntimeApi
from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute, Upstream
from gpustack_iac.runtime.gateway.settings import GatewaySettings

log = logging.getLogger("gpustack_iac.gateway.haproxy")


@dataclass(frozen=True)
class PlaneOptions:
    host: str
    port: int
    python_port: int
    directory: Path  # private (0700): configuration, token ACL, admin socket
    token: str
    domain: str | None = None
    settings: GatewaySettings = GatewaySettings()
    threads: int = 0  # 0: every core of the host
    tls_port: int | None = None
    tls_pem: Path | None = None


def _structure(route: ServiceRoute) -> tuple[object, ...]:
    """What needs a reload when it changes (everything but the replicas)."""
    return (route.auth, route.model, route.model_prefix, route.rate_limits)


class HaproxyDataPlane:
    def __init__(self, table: RoutingTable, options: PlaneOptions) -> None:
        self.table, self.options = table, options
        self.files = Files(options.directory)
        self.api = RuntimeApi(self.files.admin_socket)
        self.process = HaproxyProcess(self.files.config, self.api)
        self.slots: dict[str, list[Upstream | None]] = {}
        self._structures: dict[str, tuple[object, ...]] = {}
        self._routers: frozenset[str] = frozenset()
        self._generation = 0
        self.reloads = 0

    # --- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.options.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.options.directory, 0o700)
        self._snapshot_table()
        self._write()
        self.process.start(self._generation)
        self.table.add_listener(self._changed)

    def stop(self) -> None:
        self.table.remove_listener(self._changed)
        self.process.stop()

    # --- changes -------------------------------------------------------------------------------
    def _changed(self, name: str) -> None:
        route = self.table.service(name)
        routers = frozenset(r.name for r in self.table.routers())
        structural = routers != self._routers or (
            (route is None) != (name not in self._structures)
            or (route is not None and _structure(route) != self._structures.get(name))
        )
        if not structural and route is not None and self._apply_replicas(route):
            return
        self._snapshot_table()
        self._write()
        self.process.reload(self._generation)
        self.reloads += 1
        log.info("HAProxy reloaded (configuration %d) for %s", self._generation, name)

    def _apply_replicas(self, route: ServiceRoute) -> bool:
        """Move slots with the Runtime API; False when the service outgrew its slots (reload)."""
        slots = self.slots.setdefault(route.name, [None] * slot_count(len(route.upstreams)))
        wanted = {u.url: u for u in route.upstreams}
        kept = {u.url for u in slots if u is not None and u.url in wanted}
        free = [i for i, u in enumerate(slots) if u is None or u.url not in wanted]
        new = [u for u in route.upstreams if u.url not in kept]
        if len(new) > len(free):
            return False
        backend = f"svc_{route.name}"
        for i, up in enumerate(slots):
            if up is not None and up.url not in wanted:
                # maint: no new request; the ones in flight finish on their connections (the drain).
                self.api.set_server(backend, f"r{i + 1}", None, "maint")
                slots[i] = None
            elif up is not None:
                slots[i] = wanted[up.url]  # same address, maybe a new replica id or group
        for up in new:
            i = next(j for j in free if slots[j] is None)
            self.api.set_server(backend, f"r{i + 1}", server_address(up), "ready")
            slots[i] = up
        return True

    def _snapshot_table(self) -> None:
        services = self.table.services()
        for route in services:
            slots = self.slots.get(route.name)
            if slots is None or len(route.upstreams) > len(slots):
                slots = [None] * slot_count(len(route.upstreams))
            current = {u.url for u in slots if u is not None}
            wanted = {u.url: u for u in route.upstreams}
            slots = [wanted.get(u.url) if u is not None else None for u in slots]
            for up in route.upstreams:
                if up.url not in current:
                    slots[slots.index(None)] = up
            self.slots[route.name] = slots
        for gone in set(self.slots) - {r.name for r in services}:
            del self.slots[gone]
        self._structures = {r.name: _structure(r) for r in services}
        self._routers = frozenset(r.name for r in self.table.routers())
        self._generation += 1

    def model(self) -> DataPlaneModel:
        o = self.options
        return DataPlaneModel(
            host=o.host, port=o.port, python_port=o.python_port, files=self.files, token=o.token,
            services=self.table.services(), router_names=self._routers,
            slots={name: tuple(s) for name, s in self.slots.items()}, domain=o.domain, settings=o.settings,
            threads=o.threads or os.cpu_count() or 1, tls_port=o.tls_port, tls_pem=o.tls_pem,
            generation=self._generation,
        )

    def _write(self) -> None:
        rendered = render_config(self.model())
        _write_private(self.files.token_acl, rendered.token_acl)
        _write_private(self.files.model_map, rendered.model_map)
        _write_private(self.files.lua, rendered.lua)
        for name, text in rendered.errorfiles.items():
            _write_private(self.files.errorfile(name), text)
        _write_private(self.files.config, rendered.config)


def _write_private(path: Path, text: str) -> None:
    """Written 0600 from the start (never briefly world-readable), replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def with_port(options: PlaneOptions, port: int) -> PlaneOptions:
    return replace(options, port=port)
