"""Replica logs for the control API: the chosen replicas' output, at once or followed as it is written.

Replicas are chosen by service, optionally by group and by id or number; each agent serves its
own replicas' logs, so this only fans out to the agents and merges the answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.client import AgentClient
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.errors import UnknownServiceError


def log_sources(core: ControllerCore, service: str, group: str | None, replica: str | None) -> list[tuple[str, str, AgentClient]]:
    """(replica id, agent, client) of the replicas chosen by group and by id or number."""
    if service not in core.services:
        raise UnknownServiceError(f"service {service!r} is not registered")
    out: list[tuple[str, str, AgentClient]] = []
    for r in sorted(core.replicas.values(), key=lambda r: r.id):
        if r.record.service != service or (group is not None and r.record.group != group):
            continue
        if replica is not None and r.id != replica and r.id.rsplit("-", 1)[-1] != replica:
            continue
        client = core.clients.get(r.record.agent)
        if client is not None:
            out.append((r.id, r.record.agent, client))
    # The agent keeps a stopped replica's log: the last one that failed is why a crash-looping
    # group has nothing running (asked for by id or number, it is found there too).
    listed = {rid for rid, _, _ in out}
    failed = {name: gs.last_failed for name, gs in core.services[service].groups.items() if gs.last_failed is not None}
    for g, (rid, agent) in sorted(failed.items()):
        if (group is not None and g != group) or rid in listed:
            continue
        if replica is not None and rid != replica and rid.rsplit("-", 1)[-1] != replica:
            continue
        client = core.clients.get(agent)
        if client is not None and not any(r.record.service == service and r.record.group == g and r.routable
                                          for r in core.replicas.values()):
            out.append((rid, agent, client))
    return out


async def logs(core: ControllerCore, service: str, group: str | None, replica: str | None, tail: int) -> str:
    sources = log_sources(core, service, group, replica)
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


async def follow_logs(
    core: ControllerCore, service: str, group: str | None, replica: str | None, tail: int
) -> AsyncIterator[bytes]:
    """Log output of the chosen replicas as it is written (lines prefixed with the replica id
    when there are several), until every replica is stopped or the caller stops reading."""
    sources = log_sources(core, service, group, replica)
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
