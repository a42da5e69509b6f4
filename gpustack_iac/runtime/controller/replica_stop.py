"""Stopping replicas: out of routing first, drain, then SIGTERM through the agent; orphans retried.

A replica being stopped is tracked by a background task in `core.stop_tasks` so a tick never
waits for a drain; a replica nobody tracks any more (its service was deleted, or an agent runs
one the store does not know) is stopped by a bounded retry loop.
"""

from __future__ import annotations

import asyncio
import logging

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.publish import publish_routes
from gpustack_iac.runtime.controller.live import ReplicaState

log = logging.getLogger("gpustack_iac.controller")


def begin_stop(core: ControllerCore, r: ReplicaState) -> None:
    if r.stopping:
        return
    drain = r.ready and not r.failed
    r.stopping = True
    r.ready = False
    if r.id not in core.stop_tasks:
        core.stop_tasks[r.id] = asyncio.create_task(_stop_later(core, r, drain))


async def _stop_later(core: ControllerCore, r: ReplicaState, drain: bool) -> None:
    try:
        publish_routes(core)  # out of routing before the drain starts
        await stop_replica(core, r, drain)
    finally:
        core.stop_tasks.pop(r.id, None)


async def stop_replica(core: ControllerCore, r: ReplicaState, drain: bool) -> None:
    log.info("replica %s: stopping%s", r.id, f" after a {core.settings.drain_seconds:g} s drain" if drain else "")
    if drain:
        await asyncio.sleep(core.settings.drain_seconds)
    client = core.clients.get(r.record.agent)
    if client is not None:
        try:
            await client.stop(r.id, core.settings.stop_grace)  # None when the agent no longer has it
        except GpustackError as exc:
            # The agent is unreachable: keep the placement; a later tick stops it again.
            r.detail = f"stop failed: {exc}"
            r.stopping = False
            r.failed = True
            return
    core.forget(r)


async def stop_orphan(core: ControllerCore, agent: str, rid: str, attempts: int = 1) -> None:
    """Stop a replica nobody tracks any more, retrying (bounded) while its agent is unreachable."""
    try:
        for attempt in range(attempts):
            client = core.clients.get(agent)
            if client is None:
                return
            try:
                await client.stop(rid, core.settings.stop_grace)
                return
            except GpustackError as exc:
                log.warning("stopping %s on %s failed (%s); attempt %d of %d", rid, agent, exc, attempt + 1, attempts)
            if attempt + 1 < attempts:
                await asyncio.sleep(core.settings.orphan_retry_interval)
    finally:
        core.stop_tasks.pop(rid, None)
