"""Readiness and liveness: probe the replicas that are due and mark them ready, or failed.

A new replica is probed at the tick interval until it is ready or past the startup deadline; a
ready one at its probe's interval, and it is replaced only after several failed probes in a row.
"""

from __future__ import annotations

import asyncio
import logging

from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.probes import probe_all_of
from gpustack_iac.runtime.controller.live import CRASHED_STATES

# Each replica's way to ready or failed, one line per change: what the gateway log shows of a
# rollout that never finishes.
log = logging.getLogger("gpustack_iac.controller")


async def probe_all(core: ControllerCore, now: float) -> None:
    assert core.session is not None
    due = [
        r
        for r in core.replicas.values()
        if r.url
        and r.record.service in core.services
        and not (r.failed or r.stopping)
        and r.agent_state not in CRASHED_STATES
        and now >= r.next_probe_at
    ]
    probes = {r.id: core.services[r.record.service].definition.all_probes for r in due}
    results = await asyncio.gather(*(probe_all_of(core.session, r.url or "", probes[r.id]) for r in due))
    for r, res in zip(due, results):
        # Several probes are sent together, at the shortest of their intervals.
        interval = min((p.interval for p in probes[r.id]), default=core.settings.probe_interval)
        r.next_probe_at = now + (interval if r.ready else min(interval, core.settings.interval))
        r.detail = f"probe: {res.detail}"
        if res.ok:
            if not r.ready:
                log.info("replica %s: ready", r.id)
            r.ready = True
            r.probe_failures = 0
        elif r.ready:
            r.probe_failures += 1
            if r.probe_failures >= core.settings.probe_failures:
                r.ready = False
                r.failed = True
                r.detail = f"failed {r.probe_failures} liveness probes ({res.detail})"
                log.warning("replica %s: %s", r.id, r.detail)
        elif now - r.created_mono > core.settings.startup_deadline:
            r.failed = True
            r.detail = f"not ready after {core.settings.startup_deadline:g}s ({res.detail})"
            log.warning("replica %s: %s", r.id, r.detail)
