"""Readiness and liveness probes: HTTP requests to a replica, 2xx-3xx means healthy.

The service's probes (`url`, `method`, `headers`, `body`, `timeout`) are used when it has some, and
a replica is healthy only when every one passes; otherwise a GET of `/` on the replica's port.
Redirects are not followed: a 3xx already proves the server answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from gpustack_iac.runtime.controller.model import Probe

DEFAULT_PROBE = Probe()


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # "200" or the failure ("connection refused", "timeout after 5s", "503")


async def probe_all_of(session: aiohttp.ClientSession, base_url: str, probes: tuple[Probe, ...]) -> ProbeResult:
    """Every probe at once; healthy when all pass, else the first failure, named by its URL when there are several."""
    if len(probes) <= 1:
        return await probe_replica(session, base_url, probes[0] if probes else None)
    results = await asyncio.gather(*(probe_replica(session, base_url, p) for p in probes))
    failed = [f"{p.url}: {r.detail}" for p, r in zip(probes, results) if not r.ok]
    if failed:
        return ProbeResult(ok=False, detail="; ".join(failed))
    return ProbeResult(ok=True, detail=", ".join(r.detail for r in results))


async def probe_replica(session: aiohttp.ClientSession, base_url: str, probe: Probe | None) -> ProbeResult:
    p = probe or DEFAULT_PROBE
    path = p.url if p.url.startswith("/") else "/" + p.url
    try:
        async with session.request(
            p.method,
            base_url.rstrip("/") + path,
            headers=p.headers or None,
            data=p.body.encode() if p.body is not None else None,
            timeout=aiohttp.ClientTimeout(total=p.timeout),
            allow_redirects=False,
        ) as resp:
            await resp.read()
            return ProbeResult(ok=200 <= resp.status < 400, detail=str(resp.status))
    except asyncio.TimeoutError:
        return ProbeResult(ok=False, detail=f"timeout after {p.timeout:g}s")
    except aiohttp.ClientError as exc:
        return ProbeResult(ok=False, detail=type(exc).__name__)
    except OSError as exc:
        return ProbeResult(ok=False, detail=exc.strerror or type(exc).__name__)
