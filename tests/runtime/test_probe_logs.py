"""Probes do not flood replica logs: the controller's probes name themselves in their User-Agent,
and the local example's app leaves them out of its log (before, each probe was one log line)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp

from gpustack_iac.runtime.controller.model import Probe
from gpustack_iac.runtime.controller.probes import PROBE_USER_AGENT, probe_replica

APP = Path(__file__).resolve().parents[2] / "examples" / "local" / "app.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _probe(url: str, probe: Probe | None) -> bool:
    async with aiohttp.ClientSession() as session:
        return (await probe_replica(session, url, probe)).ok


def test_probes_say_who_they_are_and_the_example_app_does_not_log_them() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(APP)], env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not any("listening" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            time.sleep(0.05)
        # The default probe (GET /) and a service's own probe with its own headers: both marked.
        assert asyncio.run(_probe(url, None))
        assert asyncio.run(_probe(url, Probe(url="/health", headers={"X-Check": "1"})))
        urllib.request.urlopen(url + "/", timeout=30).read()  # a user's request
        while not any("GET" in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        # The user's line came after both probes (answered first): a probe's line would be there already.
        logged = [line for line in lines if "GET" in line]
        assert len(logged) == 1 and "GET / " in logged[0], logged
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=30)


def test_a_probe_header_may_replace_the_user_agent() -> None:
    seen: list[str] = []

    async def run() -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            seen.append(request.headers.get("User-Agent", ""))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as session:
                await probe_replica(session, f"http://127.0.0.1:{port}", None)
                await probe_replica(session, f"http://127.0.0.1:{port}", Probe(headers={"User-Agent": "mine"}))
        finally:
            await runner.cleanup()

    asyncio.run(run())
    assert seen == [PROBE_USER_AGENT, "mine"]
