"""HAProxy as the data plane (docs/gateway.md): what only it has - secrets kept off its
configuration, replica changes without reloads, the selection - and traffic under change
(scale from zero, a rollout, a replica killed) with real loopback replicas and a paced load.

Loads are paced at a fixed rate and judged by failed requests, never by time.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import signal
import ssl
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
import pytest
from conftest import APPS_DIR, require_data_plane, wait_until
from controller_fixtures import GatewayProcess
from gateway_fixtures import EchoStats, client, echo_app, gateway, poll_until, run, serving, upstream

from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.runtime.gateway.haproxy.process import HaproxyError
from gpustack_iac.runtime.gateway.haproxy.select import select_data_plane
from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute
from tests.support.ports import free_port


@pytest.fixture(autouse=True)
def haproxy_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUSTACK_DATA_PLANE", require_data_plane("haproxy"))


@dataclass
class Load:
    """Requests sent at a fixed rate until stopped; every answer other than 200 is a failure."""

    sent: int = 0
    ok: int = 0
    failed: list[str] = field(default_factory=list)


async def paced(url: str, headers: dict[str, str], rate: float, stop: asyncio.Event, load: Load) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    async with client() as http:

        async def one() -> None:
            try:
                async with http.get(url, headers=headers) as r:
                    body = await r.read()
                    if r.status == 200:
                        load.ok += 1
                    else:
                        load.failed.append(f"{r.status} {body[:80]!r}")
            except aiohttp.ClientError as exc:
                load.failed.append(repr(exc))

        start = loop.time()
        while not stop.is_set():
            load.sent += 1
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, start + load.sent / rate - loop.time()))
        if tasks:
            await asyncio.gather(*tasks)


@dataclass
class Replica:
    """tests/runtime/apps/echo.py in its own process, so it can be killed like a crashed replica."""

    proc: subprocess.Popen[bytes]
    url: str


async def echo_process(name: str) -> Replica:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "GPUSTACK_REPLICA_ID": name}
    proc = subprocess.Popen([sys.executable, str(APPS_DIR / "echo.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    replica = Replica(proc, f"http://127.0.0.1:{port}")
    async with client() as http:

        async def answers() -> bool:
            try:
                async with http.get(f"{replica.url}/health") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        for _ in range(600):
            if await answers():
                return replica
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError(f"replica {name} did not start")


def test_token_stays_off_the_configuration_and_every_file_is_private() -> None:
    async def scenario() -> None:
        async with gateway(RoutingTable()) as gw:
            directory = Path(gw.metrics.api.socket_path).parent  # type: ignore[attr-defined]
            config = (directory / "haproxy.cfg").read_text()
            assert gw.token not in config and gw.admin_token not in config
            for path in directory.iterdir():
                if path.is_file():
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            pid = _haproxy_pid(directory)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert gw.token.encode() not in f.read()

    run(scenario())


def _haproxy_pid(directory: Path) -> int:
    config = str(directory / "haproxy.cfg")
    return next(p.pid for p in psutil.process_iter(["cmdline"]) if config in (p.info["cmdline"] or []))


def test_rollout_under_100_rps_moves_replicas_without_a_reload_or_a_failed_request() -> None:
    async def scenario() -> None:
        old, new = EchoStats("old"), EchoStats("new")
        async with serving(echo_app(old, delay=0.05)) as u_old, serving(echo_app(new, delay=0.05)) as u_new, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("o", "v1", u_old),)))
            plane_reloads = _reloads(gw)
            stop, load = asyncio.Event(), Load()
            runner = asyncio.ensure_future(paced(f"{gw.url}/services/svc/x", gw.auth, 100, stop, load))
            await poll_until(lambda: old.requests >= 50, timeout=60)
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("o", "v1", u_old), upstream("n", "v2", u_new))))
            await poll_until(lambda: new.requests >= 20, timeout=60)
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("n", "v2", u_new),)))
            # Requests HAProxy had already sent to `old` finish there (the drain); then nothing new arrives.
            await poll_until(lambda: old.in_flight == 0 and new.requests >= 40, timeout=60)
            served_by_old = old.requests
            await poll_until(lambda: new.requests >= 120, timeout=60)
            stop.set()
            await runner
            assert load.failed == [] and load.ok == load.sent
            assert old.requests == served_by_old  # drained: nothing new after it left the route
            assert _reloads(gw) == plane_reloads  # replica changes went through the Runtime API
            groups = gw.metrics.snapshot()["svc"].per_group
            assert groups["v2"].requests_total >= 100

    run(scenario(), deadline=120)


def _reloads(gw: object) -> int:
    # The plane is reachable from the metrics' slot table closure; the count of reloads is on the plane.
    slots = gw.metrics.slots  # type: ignore[attr-defined]
    plane = slots.__closure__[0].cell_contents  # the fixture's `plane` variable
    return int(plane.reloads)


def test_a_replica_killed_under_load_fails_at_most_its_open_requests() -> None:
    async def scenario() -> None:
        a, b = await echo_process("a"), await echo_process("b")
        try:
            async with gateway() as gw:
                gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("a", "g", a.url), upstream("b", "g", b.url))))
                stop, load = asyncio.Event(), Load()
                runner = asyncio.ensure_future(paced(f"{gw.url}/services/svc/x?delay=0.2", gw.auth, 50, stop, load))
                await poll_until(lambda: load.ok >= 50, timeout=60)
                open_to_b = gw.metrics.snapshot()["svc"].in_flight  # an upper bound for b's share
                b.proc.send_signal(signal.SIGKILL)
                b.proc.wait()
                ok_at_kill = load.ok
                await poll_until(lambda: load.ok >= ok_at_kill + 100, timeout=60)
                stop.set()
                await runner
                # Requests open on b when it died may fail (a reply was cut); the rest are retried or go to a.
                assert len(load.failed) <= max(open_to_b, 1), load.failed
        finally:
            for r in (a, b):
                r.proc.kill()
                r.proc.wait()

    run(scenario(), deadline=120)


def test_scale_from_zero_under_50_rps_fails_no_request() -> None:
    async def scenario() -> None:
        stats = EchoStats("first")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, min_replicas_zero=True))
            asked: list[str] = []
            gw.table.on_demand(asked.append)
            stop, load = asyncio.Event(), Load()
            runner = asyncio.ensure_future(paced(f"{gw.url}/services/svc/x", gw.auth, 50, stop, load))
            await poll_until(lambda: bool(asked), timeout=60)  # the Python activator holds and asks for a replica
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, min_replicas_zero=True, upstreams=(upstream("r", "g", u),)))
            await poll_until(lambda: load.ok >= 100, timeout=60)
            stop.set()
            await runner
            assert load.failed == [] and load.ok == load.sent
            assert stats.requests == load.sent  # held requests and direct ones all reached the replica once

    run(scenario(), deadline=120)


def test_selection_falls_back_to_python_in_one_line_and_refuses_a_missing_haproxy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gpustack_iac.gateway")
    assert select_data_plane("auto", binary="no-such-haproxy-binary") == "python"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no haproxy on PATH" in lines[0] and "Python data plane" in lines[0]
    with pytest.raises(HaproxyError, match="data_plane: haproxy"):
        select_data_plane("haproxy", binary="no-such-haproxy-binary")
    assert select_data_plane("python", binary="no-such-haproxy-binary") == "python"
    assert select_data_plane("auto") == "haproxy"



def test_the_gateway_process_serves_plain_and_tls_through_haproxy_and_leaves_nothing(tmp_path: Path) -> None:
    gw = GatewayProcess(root=tmp_path, token=new_token(), admin_token=new_token(),
                        extra_flags=["--data-plane", "haproxy", "--tls-port", "0", "--certificate", "self-signed"])
    write_token_file(tmp_path / "token", gw.token)
    write_token_file(tmp_path / "admin-token", gw.admin_token)
    masters: list[psutil.Process] = []
    try:
        gw.start()
        tls_port = int(json.loads((tmp_path / "gateway.port").read_text())["tls_port"])
        config = (tmp_path / "state" / "haproxy" / "haproxy.cfg").read_text()
        assert f":{gw.port} " in config and f":{tls_port} ssl crt " in config  # both listeners are HAProxy's
        assert stat.S_IMODE((tmp_path / "state" / "haproxy" / "tls.pem").stat().st_mode) == 0o600
        status, _ = gw.get("/services/nope/x", token=None)
        assert status == 401
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed: the test checks the path, not trust
        connection = http.client.HTTPSConnection("127.0.0.1", tls_port, context=context, timeout=30)
        connection.request("GET", "/services/nope/x", headers={"Authorization": f"Bearer {gw.token}"})
        assert connection.getresponse().status == 404  # through HAProxy's TLS to the Python plane behind it
        connection.close()
        masters = [p for p in psutil.Process(gw.pid).children() if p.name() == "haproxy"]
        assert masters, "HAProxy runs as the gateway's child"
    finally:
        gw.stop_everything()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in masters), what="HAProxy to stop with its gateway")


def test_a_sampled_log_line_counts_for_the_requests_it_stands_for() -> None:
    """Past render.LOG_SAMPLE_ABOVE_RPS HAProxy logs one request in LOG_SAMPLE with that weight; below
    it every line is its own request ("-"), so light loads keep exact counts."""
    from gpustack_iac.runtime.gateway.haproxy.render import LOG_SAMPLE
    from gpustack_iac.runtime.gateway.haproxy.stats import HaproxyMetrics

    metrics = HaproxyMetrics()
    metrics.observe("svc_a r1 5 7 200 -")
    metrics.observe(f"svc_a r1 5 7 200 {LOG_SAMPLE}")
    metrics.observe("python_plane py 5 7 200 -")  # the Python plane counts its own requests
    load = metrics.snapshot()["a"]
    assert sum(load.ttfb_buckets) == 1 + LOG_SAMPLE
    assert metrics._service("a").latency.count == 1 + LOG_SAMPLE


def test_past_haproxys_buffer_a_model_body_is_still_routed_and_a_long_head_is_refused() -> None:
    """render.BUFSIZE (16 KiB, HAProxy's default, so that its L7-retry copy stays cheap): an OpenAI body
    larger than the buffer cannot be read by json_query, so HAProxy hands it to the Python plane, which
    routes it by `model` all the same; a head longer than the buffer is refused with 400, nothing forwarded."""
    from gpustack_iac.runtime.gateway.haproxy.render import BUFSIZE

    async def scenario() -> None:
        stats = EchoStats("big")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("m", auth=True, model="org/m", upstreams=(upstream("m0", "g", u),)))
            prompt = "x" * (2 * BUFSIZE)
            body = json.dumps({"model": "org/m", "messages": [{"role": "user", "content": prompt}]}).encode()
            async with client() as http:
                async with http.post(f"{gw.url}/v1/chat/completions", data=body,
                                     headers={**gw.auth, "Content-Type": "application/json"}) as r:
                    assert r.status == 200
                    seen = await r.json()
                assert seen["replica"] == "big" and seen["body"] == body.decode()
                before = stats.requests
                async with http.get(f"{gw.url}/services/m/", headers={**gw.auth, "X-Long": "a" * BUFSIZE}) as r:
                    assert r.status == 400
                assert stats.requests == before

    run(scenario())
