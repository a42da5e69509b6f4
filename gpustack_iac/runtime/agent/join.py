"""The agent's side of joining a controller (docs/cloud.md#joining).

A cloud node boots with the controller's URL and a file holding its fleet's join token (fetched
from the cloud's secret store, mode 0600); the agent registers itself (address, port, facts,
labels) and keeps checking that the controller still knows it, joining again when it does not:
a gateway replaced by a new instance starts with empty state, and its agents come back on their
own. The join token never leaves this process except as the bearer of these two calls.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gpustack_iac.runtime.backoff import Backoff

log = logging.getLogger("gpustack_iac.agent.join")


class JoinRefused(Exception):
    """The controller refused the join token (401) or the name (409)."""


@dataclass(frozen=True)
class JoinConfig:
    controller_url: str
    join_token: str
    fleet: str
    name: str
    url: str  # where the controller reaches this agent
    agent_token: str
    node_group: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    check_interval: float = 10.0  # seconds between "do you still know me?" checks
    retry: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))

    def __repr__(self) -> str:  # never show either token in logs or tracebacks
        return f"JoinConfig(controller_url={self.controller_url!r}, fleet={self.fleet!r}, name={self.name!r})"


def join_body(cfg: JoinConfig, facts: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"fleet": cfg.fleet, "url": cfg.url, "token": cfg.agent_token,
                            "labels": dict(cfg.labels), "facts": facts}
    if cfg.node_group:
        body["node_group"] = cfg.node_group
    return body


async def _join(session: aiohttp.ClientSession, cfg: JoinConfig, facts: dict[str, Any]) -> None:
    async with session.put(f"{cfg.controller_url}/control/join/{cfg.name}", json=join_body(cfg, facts)) as resp:
        if resp.status in (401, 409):
            raise JoinRefused(f"controller refused the join ({resp.status}): {(await resp.text())[:200]}")
        resp.raise_for_status()


async def _known(session: aiohttp.ClientSession, cfg: JoinConfig) -> bool:
    async with session.get(f"{cfg.controller_url}/control/join/{cfg.name}", params={"fleet": cfg.fleet}) as resp:
        if resp.status == 404:
            return False
        if resp.status == 401:
            raise JoinRefused("controller refused the join token (401)")
        resp.raise_for_status()
        return bool((await resp.json()).get("url") == cfg.url)


async def keep_joined(cfg: JoinConfig, facts: dict[str, Any]) -> None:
    """Join, then stay joined until cancelled. Errors are logged and retried with back-off: a
    controller that is down or restarting is the normal case at boot."""
    headers = {"Authorization": f"Bearer {cfg.join_token}"}
    timeout = aiohttp.ClientTimeout(total=30)
    failures = 0
    joined = False
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        while True:
            try:
                if not joined or not await _known(session, cfg):
                    await _join(session, cfg, facts)
                    log.info("joined controller %s as %s (fleet %s)", cfg.controller_url, cfg.name, cfg.fleet)
                    joined = True
                failures = 0
                await asyncio.sleep(cfg.check_interval)
            except (aiohttp.ClientError, asyncio.TimeoutError, JoinRefused) as exc:
                failures += 1
                joined = False
                log.warning("join: %s; retrying", exc)
                await asyncio.sleep(cfg.retry.delay(failures))
