"""Agent polling: open a client per agent, ask each what runs, and fold the listings into replica state.

An agent that does not answer is marked unhealthy and its replicas are left to the probes (they
may well keep serving); a replica its agent no longer lists, or lists as crashed, is marked
failed so the tick replaces it; a replica of ours that an agent runs but the store does not know
is stopped as a duplicate.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from gpustack_iac.errors import GpustackError, RuntimeApiError
from gpustack_iac.runtime.client import AgentClient
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.placement import HostFacts
from gpustack_iac.runtime.controller.replica_stop import stop_orphan
from gpustack_iac.runtime.controller.live import CRASHED_STATES, AgentState
from gpustack_iac.runtime.controller.store import AgentRecord
from gpustack_iac.runtime.tunnels import HostTunnels, TunnelSpec


async def open_agent(core: ControllerCore, rec: AgentRecord) -> None:
    url = rec.url
    old = core.tunnels.pop(rec.name, None)
    if old is not None:
        await old.close()
    if rec.tunnel and not TunnelSpec.from_json(rec.name, rec.tunnel).direct():
        tunnels = HostTunnels(TunnelSpec.from_json(rec.name, rec.tunnel), core.tunnel_dir / "tunnels")
        core.tunnels[rec.name] = tunnels
        url = tunnels.agent_url()
        await tunnels.ensure_agent()  # a failure shows as an unreachable agent; each refresh retries
    # The pooled session is the controller's: every agent call shares its connections.
    core.clients[rec.name] = AgentClient(url, rec.token, session=core.session, timeout=core.settings.agent_timeout)
    prev = core.agents.get(rec.name)
    core.agents[rec.name] = AgentState(record=rec, host=prev.host if prev else None)


async def refresh_agent(core: ControllerCore, agent: AgentState, force_host: bool = False) -> None:
    client = core.clients.get(agent.record.name)
    if client is None:
        return
    now = core.clock()

    async def ask() -> None:
        tunnels = core.tunnels.get(agent.record.name)
        if tunnels is not None and not tunnels.agent_ready():
            raise RuntimeApiError(f"no SSH tunnel to {tunnels.spec.hostname}:{tunnels.spec.port}")
        if force_host or agent.host is None or now - agent.host_checked_at > core.settings.host_refresh:
            agent.host = HostFacts.from_json(as_dict(await client.host()))
            agent.host_checked_at = now
        agent.listing = {str(r["id"]): r for r in (as_dict(r) for r in await client.list())}

    # An agent already down gets a short answer window: a silent host must not slow every tick
    # (and with it probes, placement and the re-placement of its own replicas).
    budget = core.settings.agent_timeout if agent.down_since is None else min(1.0, core.settings.agent_timeout)
    try:
        await asyncio.wait_for(ask(), timeout=budget * 2)
        agent.healthy = True
        agent.error = ""
        agent.down_since = None
    except (GpustackError, asyncio.TimeoutError) as exc:
        agent.healthy = False
        agent.listing = None
        agent.error = str(exc) or f"no answer within {budget * 2:g} s"
        if agent.down_since is None:
            agent.down_since = now


def sync_replicas(core: ControllerCore, now: float) -> None:
    for agent in core.agents.values():
        # Lost: its replicas are forgotten (not stopped: it does not answer) and placed elsewhere by
        # this tick; when it answers again, what it still runs is unknown to the store and stopped
        # below as a duplicate, so a returning host never serves stale replicas.
        if agent.down_since is not None and now - agent.down_since >= core.settings.agent_lost_after and not agent.lost:
            agent.lost = True
            for r in [r for r in core.replicas.values() if r.record.agent == agent.record.name]:
                core.forget(r)
        elif agent.down_since is None:
            agent.lost = False
    for r in list(core.replicas.values()):
        owner = core.agents.get(r.record.agent)
        if owner is None:
            core.forget(r)
            continue
        if owner.listing is None:
            continue  # agent unreachable: the replica may well keep serving; probes decide
        info = owner.listing.get(r.id)
        if info is None:
            if r.agent_state != "pending" or now - r.created_mono > core.settings.startup_deadline:
                # The agent no longer knows it (its state was lost): place a new one.
                r.failed = True
                r.ready = False
                r.detail = "unknown to its agent"
            continue
        raw = info.get("url") or (f"http://127.0.0.1:{info['port']}" if info.get("port") else None)
        r.url = core.map_url(r.record.agent, raw) if raw else r.url
        r.pid = info.get("pid")
        restarts = int(info.get("restarts") or 0)
        # The agent may restart a crashed process between two listings; a higher restart
        # count is the same crash seen late. (Unknown before the first listing of this process.)
        restarted = r.agent_state != "adopting" and r.agent_state != "pending" and restarts > r.restarts
        r.agent_state = str(info.get("state", "unknown"))
        if r.agent_state == "pulling":
            r.created_mono = now  # the startup deadline counts from the end of the image's pull
        r.restarts = restarts
        r.exit_code = info.get("exit_code")
        if (r.agent_state in CRASHED_STATES or restarted) and not r.stopping:
            r.ready = False
            r.failed = True
            # An agent's `error` (an image it cannot pull) says more than an exit code.
            r.detail = str(info.get("error") or f"process {'restarted' if restarted else r.agent_state} (exit code {r.exit_code})")
    # Forwards to replica ports an SSH host no longer serves are closed.
    for name, tunnels in core.tunnels.items():
        listing = core.agents[name].listing if name in core.agents else None
        if listing is not None:
            tunnels.prune({_port(info) for info in listing.values()} - {0})
    # Replicas of our services that an agent runs but the store does not know (a crash between
    # the agent's start and our bookkeeping) would be duplicates: stop them.
    known = set(core.replicas)
    for agent in core.agents.values():
        for rid, info in (agent.listing or {}).items():
            labels = info.get("labels") or {}
            if (
                rid not in known
                and labels.get("gpustack.service") in core.services
                and info.get("state") != "stopped"
                and rid not in core.stop_tasks
            ):
                core.stop_tasks[rid] = asyncio.create_task(stop_orphan(core, agent.record.name, rid))


def _port(info: dict[str, Any]) -> int:
    if info.get("port"):
        return int(info["port"])
    url = str(info.get("url") or "")
    tail = url.rsplit(":", 1)[-1].split("/", 1)[0]
    return int(tail) if tail.isdigit() else 0


def as_dict(value: Any) -> dict[str, Any]:
    """Agent answers as plain dicts, whether the client returns dicts or dataclasses."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "to_json"):
        return dict(value.to_json())
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise RuntimeApiError(f"unexpected agent answer: {type(value).__name__}")
