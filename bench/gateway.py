"""Gateway data-plane benchmark: nginx, HAProxy and the Python gateway side by side, same pinned core.

    python bench/gateway.py [--duration 8] [--repeats 3] [--rate 500] [--streams 2000] [--quick]
    python bench/gateway.py --python-detail [--duration 8] [--streams 2000] [--hold 5] [--baseline-src DIR]

Everything runs on 127.0.0.1 and stops when the run ends (processes by pid, the temp dir removed).
Installs nothing: Debian's `nginx`, `haproxy` and `wrk` must be on PATH (.ci/run installs them).

The comparison (default; issue 22). Three data planes on the first CPU, each doing the same work
per request (a bearer check, a /services/<name>/ prefix rewrite, keep-alive to the upstream):
nginx with one worker; HAProxy with one thread and the configuration the gateway renders
(gpustack_iac.runtime.gateway.haproxy, through HaproxyDataPlane: what production runs, the row the
targets are for); HAProxy with a hand-written minimal configuration (`http-reuse always`, nothing
else: HAProxy's floor, so the renderer's cost shows); and this project's Python gateway (the
fallback data plane). The upstreams run on the other CPU and are not the bottleneck:
nginx `return 200` for small responses, and an asyncio SSE streamer (bench/gateway_sse.py). The
load generators (wrk; an asyncio SSE client) run on that other CPU too. Cells, each repeated
`--repeats` times with the peers interleaved per round (the table shows medians):
  CPU us/request   the proxy process's user+sys CPU time / requests under wrk, 64 connections, a
                   3-byte response; "nginx/ours" is nginx's figure over the row's (target >= 0.8)
  p50 added        p50 at a paced `--rate` req/s through the proxy minus p50 direct to the upstream
  TTFB p99         500 SSE streams started at once, connect to first event
  completed/errors `--streams` SSE streams at once, each 10 events 0.5 s apart, then [DONE]
  CPU us/event     the proxy's CPU time during those streams / events delivered
Each target is printed with PASS/FAIL against nginx's figure from the same run. Then multi-core:
HAProxy with `nbthread 2` over both CPUs, how its threads share connections and work
(`show activity` on its Runtime API socket) and its throughput against one thread.
The machine may be shared: the load average is printed per round, and ratios from the same run
mean more than absolute figures.

`--python-detail` keeps the Python gateway's own rows (the measurements of the earlier rounds):
parsing alone, an aiohttp floor, latency at half the gateway's saturation and at 100 req/s,
and `--streams` held SSE streams with the gateway's RSS; `--baseline-src DIR` adds a row for
another checkout's gateway (`git archive <commit> | tar -x -C DIR`) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Sequence

import aiohttp
import psutil

SMALL_BODY = b"ok\n"
STARTUP_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------------
# roles run in child processes (the bench re-executes itself)
# --------------------------------------------------------------------------------------------------


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    tmp.replace(path)


async def _serve_forever(runner: "object", port_file: Path) -> None:
    from aiohttp import web

    assert isinstance(runner, web.BaseRunner)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    _write_port_file(port_file, runner.addresses[0][1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


REQUEST_HEAD = (
    b"POST /services/bench/v1/chat/completions HTTP/1.1\r\nHost: gateway.example.com\r\n"
    b"Authorization: Bearer 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ\r\nContent-Type: application/json\r\n"
    b"Accept: text/event-stream\r\nUser-Agent: bench/1.0\r\nContent-Length: 0\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 19:34:01 GMT\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)


def _cpu_us(fn: "object", n: int = 20000) -> float:
    """Best of five: CPU microseconds per call (process time, so other work on the machine counts less)."""
    assert callable(fn)
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def role_heads(port_file: Path) -> None:
    """CPU per request head and per small response, parsed the way this checkout's gateway parses them."""
    import gpustack_iac.runtime.gateway.server as server
    import gpustack_iac.runtime.gateway.upstream as upstream
    from gpustack_iac.runtime.gateway.settings import GatewaySettings

    loop = asyncio.new_event_loop()
    figures: dict[str, float] = {}
    if hasattr(server, "parse_request_head"):  # the hand-written parser
        parse = server.parse_request_head
        head = REQUEST_HEAD[: REQUEST_HEAD.index(b"\r\n\r\n")]
        figures["request head"] = _cpu_us(lambda: REQUEST_HEAD.find(b"\r\n\r\n") >= 0 and parse(head, "127.0.0.1"))
    else:
        data_plane = server.DataPlaneServer(None, loop, max_body=1 << 20)  # type: ignore[arg-type]
        conn = server.ServerConnection(data_plane)
        conn._enqueue = lambda request: None  # type: ignore[method-assign]
        figures["request head"] = _cpu_us(lambda: conn._parser.feed_data(REQUEST_HEAD))
    pool = upstream.UpstreamPool(GatewaySettings(read_timeout=None), loop)
    uconn = upstream.UpstreamConnection(pool, "http://127.0.0.1:1")

    def response() -> None:
        uconn._phase = upstream._HEAD
        uconn._chunks.clear()
        uconn._queued = 0
        uconn.data_received(RESPONSE)
        assert uconn._phase == upstream._DONE and uconn.status == 200

    figures["response"] = _cpu_us(response)
    port_file.write_text(json.dumps(figures))


def role_backend(port_file: Path, sse_interval: float) -> None:
    """Small answers on /small, SSE on /sse?n=N (one event every `sse_interval` seconds)."""
    from aiohttp import web

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_BODY, content_type="text/plain")

    async def sse(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "10"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for i in range(n):
            await response.write(b"data: {\"token\": %d}\n\n" % i)
            await asyncio.sleep(sse_interval)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_get("/sse", sse)
    _install_uvloop()
    asyncio.run(_serve_forever(web.AppRunner(app, access_log=None, handler_cancellation=True), port_file))


def role_floor(port_file: Path, small_url: str) -> None:
    """The floor under the gateway: an aiohttp server relaying through one pooled ClientSession, nothing else
    (no routing, auth, balancing, metrics or header rewriting). The gap to the gateway row is this project's cost."""
    from aiohttp import web

    session: aiohttp.ClientSession | None = None

    async def relay(request: web.Request) -> web.Response:
        assert session is not None
        async with session.get(small_url + "/small") as upstream:
            body = await upstream.read()
        return web.Response(body=body, status=upstream.status)

    async def pool(app: web.Application) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession()
        yield
        await session.close()

    app = web.Application()
    app.cleanup_ctx.append(pool)
    app.router.add_get("/{tail:.*}", relay)
    _install_uvloop()
    asyncio.run(_serve_forever(web.AppRunner(app, access_log=None), port_file))


def role_gateway(port_file: Path, token_file: Path, small_url: str, sse_url: str) -> None:
    from gpustack_iac.runtime.auth import new_token, read_token_file
    from gpustack_iac.runtime.gateway.metrics import Metrics
    from gpustack_iac.runtime.gateway.proxy import create_gateway_app, make_runner
    from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute, Upstream
    from gpustack_iac.runtime.gateway.settings import GatewaySettings

    import gpustack_iac

    print(f"gateway code from {Path(gpustack_iac.__file__).parent}", flush=True)
    token = read_token_file(token_file)
    table = RoutingTable()
    table.set_service(ServiceRoute("bench", auth=True, model="bench-model", upstreams=(Upstream("small-0", "base", small_url),)))
    table.set_service(ServiceRoute("sse", auth=True, model=None, upstreams=(Upstream("sse-0", "base", sse_url),)))
    app = create_gateway_app(table, Metrics(), token, new_token(), None, GatewaySettings())
    _install_uvloop()
    asyncio.run(_serve_forever(make_runner(app), port_file))


# --------------------------------------------------------------------------------------------------
# process management
# --------------------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    port: int


class Children:
    """Every process the bench started, stopped by pid at the end (also on error or Ctrl-C)."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.planes: list["HaproxyPeer"] = []  # stopped through their own control (SIGUSR1, then by pid)

    def stop_all(self) -> None:
        for plane in reversed(self.planes):
            plane.stop()
        self.planes.clear()
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.terminate()
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=10)
        self.children.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited early with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port} within {STARTUP_TIMEOUT_S:.0f}s")


def start_python_role(
    children: Children, name: str, cores: Sequence[int], workdir: Path, role_args: list[str], source: Path | None = None
) -> Child:
    port_file = workdir / f"{name}.port"
    cmd = [*taskset(cores), sys.executable, str(Path(__file__).resolve()), "--role", *role_args, "--port-file", str(port_file)]
    log = open(workdir / f"{name}.log", "wb")
    env = None
    if source is not None:
        # PYTHONPATH is searched before the installed (editable) package: the role runs that checkout's code.
        env = {**os.environ, "PYTHONPATH": str(source.resolve())}
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    log.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not port_file.exists():
        if process.poll() is not None:
            raise SystemExit(f"{name} exited early; see {workdir / (name + '.log')}:\n{(workdir / (name + '.log')).read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{name} did not start within {STARTUP_TIMEOUT_S:.0f}s")
        time.sleep(0.05)
    child = Child(name, process, int(json.loads(port_file.read_text())["port"]))
    children.children.append(child)
    return child


# What every nginx here shares: foreground, its files in the run directory, no access log, long keep-alive.
NGINX_HEAD = """
worker_processes {workers};
daemon off;
pid {dir}/{name}.pid;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {dir}/{name}-body; proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fcgi; uwsgi_temp_path {dir}/{name}-uwsgi; scgi_temp_path {dir}/{name}-scgi;
  keepalive_requests 1000000;
"""

NGINX_STATIC = NGINX_HEAD + """  server {{ listen 127.0.0.1:{port} backlog=4096; location /small {{ default_type text/plain; return 200 "ok\\n"; }} }}
}}
"""

NGINX_PROXY = NGINX_HEAD.replace("{workers}", "1") + """  upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
  }}
}}
"""


def start_nginx(children: Children, name: str, cores: Sequence[int], workdir: Path, template: str, **values: object) -> Child:
    port = free_port()
    conf = workdir / f"{name}.conf"
    conf.write_text(template.format(dir=workdir, name=name, port=port, **values))
    log = open(workdir / f"{name}.log", "wb")
    cmd = [*taskset(cores), "nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / f"{name}-error.log")]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    child = Child(name, process, port)
    children.children.append(child)
    wait_for_port(port, process, name)
    return child


def taskset(cores: Sequence[int]) -> list[str]:
    if not cores or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in cores)]


# --------------------------------------------------------------------------------------------------
# load generation
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    requests: int = 0
    cpu_us_per_request: float = float("nan")  # user+sys CPU of the measured server, whatever else shares its core


def cpu_seconds(pid: int) -> float:
    """User+sys CPU of a process and its children (nginx workers), so a busy shared machine does not skew it."""
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def run_wrk(
    url: str, token: str | None, connections: int, duration: float, workdir: Path, cores: Sequence[int], rate: float | None = None,
    threads: int = 1,
) -> LoadResult:
    """wrk closed-loop; with `rate`, each connection waits connections/rate seconds between its requests, which
    paces the load at about `rate` (a little under: the answer's own latency adds to each connection's cycle)."""
    script = workdir / "auth.lua"
    # The token goes into a 0600 script file, not wrk's argv (argv is public in `ps`).
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if token:
            f.write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        if rate:
            f.write(f"function delay() return {connections * 1000.0 / rate:.3f} end\n")
    cmd = [*taskset(cores), "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(m.group(1)) * _WRK_UNITS[m.group(2)] if m else float("nan")

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return LoadResult(rps, percentile("50"), percentile("99"), errors, "wrk", requests)


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float("nan"), float("nan")
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def closed_loop(url: str, token: str | None, connections: int, duration: float) -> LoadResult:
    """Fallback when wrk is missing: `connections` workers, each sending its next request when the last answered."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration

        async def worker() -> None:
            nonlocal errors
            while loop.time() < end:
                t = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - t)

        start = loop.time()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = loop.time() - start
    p50, p99 = _percentiles(latencies)
    return LoadResult(len(latencies) / elapsed, p50, p99, errors, "python closed-loop", len(latencies))


async def paced(url: str, token: str | None, rate: float, duration: float) -> LoadResult:
    """Open-loop load at a fixed rate (requests are sent on schedule whether or not earlier ones answered)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loop = asyncio.get_running_loop()

        async def one() -> None:
            nonlocal errors
            # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
            t = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - t)

        # Warm the pool so connection setup is not measured.
        await asyncio.gather(*(one() for _ in range(32)))
        latencies.clear()
        start = loop.time()
        tasks: list[asyncio.Task[None]] = []
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    p50, p99 = _percentiles(latencies)
    return LoadResult(len(latencies) / elapsed, p50, p99, errors, "python open-loop", len(latencies))


async def hold_streams(url: str, token: str, streams: int, hold: float, gateway_pid: int) -> dict[str, float]:
    """Open `streams` SSE streams through the gateway, keep them all live for `hold` seconds, report RSS."""
    proc = psutil.Process(gateway_pid)
    rss_idle = proc.memory_info().rss
    headers = {"Authorization": f"Bearer {token}"}
    first_event = 0
    events = [0] * streams
    opened = asyncio.Event()
    stop = asyncio.Event()
    connect_gate = asyncio.Semaphore(200)  # open in waves: a 2,000-SYN burst only measures the backlog
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        loop = asyncio.get_running_loop()

        async def stream(i: int) -> None:
            nonlocal first_event
            async with connect_gate:
                response = await session.get(url, headers=headers)
                line = await response.content.readline()
                while line and not line.startswith(b"data:"):
                    line = await response.content.readline()
            try:
                events[i] += 1
                first_event += 1
                if first_event == streams:
                    opened.set()
                while not stop.is_set():
                    line = await response.content.readline()
                    if not line:
                        break
                    if line.startswith(b"data:"):
                        events[i] += 1
            finally:
                response.close()

        start = loop.time()
        tasks = [asyncio.ensure_future(stream(i)) for i in range(streams)]
        try:
            await asyncio.wait_for(opened.wait(), 120)
            open_s = loop.time() - start
            before = list(events)
            peak = proc.memory_info().rss
            t_end = loop.time() + hold
            while loop.time() < t_end:
                await asyncio.sleep(0.5)
                peak = max(peak, proc.memory_info().rss)
            live = sum(1 for a, b in zip(before, events) if b > a)
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"open_s": open_s, "live": live, "rss_idle": rss_idle, "rss_peak": peak}


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def core_layout() -> tuple[list[int], list[int], list[int]]:
    cpus = sorted(os.sched_getaffinity(0))
    proxy = cpus[:1]
    if len(cpus) >= 4:
        return proxy, cpus[1 : 1 + (len(cpus) - 1) // 2], cpus[1 + (len(cpus) - 1) // 2 :]
    if len(cpus) >= 2:
        return proxy, cpus[1:], cpus[1:]
    return proxy, proxy, proxy


def fmt(r: LoadResult) -> str:
    err = f"  ({r.errors} errors)" if r.errors else ""
    cpu = f" {r.cpu_us_per_request:>9.1f} {1e6 / r.cpu_us_per_request:>11.0f}" if r.cpu_us_per_request == r.cpu_us_per_request else ""
    return f"{r.rps:>10.0f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f}{cpu}{err}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run (bounded: at most 60)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--streams", type=int, default=2000, help="concurrent SSE streams to hold (0 to skip)")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold the streams")
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="a checkout of another revision: its gateway gets a row of its own in the same run")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every comparison cell (the table shows medians)")
    parser.add_argument("--rate", type=float, default=500.0, help="paced rate for the added-p50 cell")
    parser.add_argument("--quick", action="store_true", help="a few hundred requests and a few streams: checks that it runs")
    parser.add_argument("--python-detail", action="store_true",
                        help="instead of the data-plane comparison: the Python gateway's own rows (parsing, aiohttp floor, "
                             "latency at half saturation, RSS holding --streams)")
    parser.add_argument("--role", choices=["backend", "gateway", "floor", "heads", "streamer"], help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--small-url", help=argparse.SUPPRESS)
    parser.add_argument("--sse-url", help=argparse.SUPPRESS)
    parser.add_argument("--sse-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "backend":
        role_backend(args.port_file, args.sse_interval)
        return 0
    if args.role == "floor":
        role_floor(args.port_file, args.small_url)
        return 0
    if args.role == "gateway":
        role_gateway(args.port_file, args.token_file, args.small_url, args.sse_url)
        return 0
    if args.role == "heads":
        role_heads(args.port_file)
        return 0
    if args.role == "streamer":
        role_streamer(args.port_file)
        return 0
    raise_nofile_limit()
    return run_python_detail(args) if args.python_detail else run_comparison(args)


def raise_nofile_limit() -> None:
    # 2,000 streams cost a few thousand descriptors across the processes; children inherit this.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def run_python_detail(args: argparse.Namespace) -> int:
    duration = min(max(args.duration, 1.0), 60.0)

    from gpustack_iac.runtime.auth import new_token, write_token_file

    have_nginx = shutil.which("nginx") is not None
    have_wrk = shutil.which("wrk") is not None
    proxy_cores, backend_cores, load_cores = core_layout()
    print("gpustack-iac gateway benchmark (loopback only)")
    print(f"  cores: proxy (gateway / nginx proxy) {proxy_cores}, backend {backend_cores}, load generator {load_cores}")
    if set(proxy_cores) & set(load_cores) or set(backend_cores) & set(load_cores):
        print("  note: too few cores to separate every role; shared cores lower every row alike")
    print(f"  nginx: {'found, used as the static backend and the proxy_pass peer' if have_nginx else 'not on PATH (apt-get install nginx) - no nginx row; Python backend'}")
    print(f"  wrk:   {'found' if have_wrk else 'not on PATH (apt-get install wrk) - Python load generator, a lower bound'}")
    print(f"  loop:  {'uvloop' if _has_uvloop() else 'asyncio (uvloop not installed)'}")

    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    try:
        token = new_token()
        token_file = workdir / "token"
        write_token_file(token_file, token)
        py_backend = start_python_role(children, "py-backend", backend_cores, workdir, ["backend"])
        if have_nginx:
            static = start_nginx(children, "static", backend_cores, workdir, NGINX_STATIC, workers=len(backend_cores))
            backend_port = static.port
        else:
            backend_port = py_backend.port
        small_url = f"http://127.0.0.1:{backend_port}"
        gw = start_python_role(
            children, "gateway", proxy_cores, workdir,
            ["gateway", "--token-file", str(token_file), "--small-url", small_url, "--sse-url", f"http://127.0.0.1:{py_backend.port}"],
        )
        backend_pid = static.process.pid if have_nginx else py_backend.process.pid
        targets: list[tuple[str, str, str | None, int]] = [("direct backend", f"{small_url}/small", None, backend_pid)]
        if have_nginx:
            proxy = start_nginx(children, "proxy", proxy_cores, workdir, NGINX_PROXY, backend=backend_port)
            targets.append(("nginx proxy_pass, 1 worker", f"http://127.0.0.1:{proxy.port}/small", None, proxy.process.pid))
        floor = start_python_role(children, "floor", proxy_cores, workdir, ["floor", "--small-url", small_url])
        targets.append(("aiohttp floor, 1 core", f"http://127.0.0.1:{floor.port}/small", None, floor.process.pid))
        targets.append(("gateway, 1 core", f"http://127.0.0.1:{gw.port}/services/bench/small", token, gw.process.pid))
        if args.baseline_src is not None:
            if not (args.baseline_src / "gpustack_iac" / "runtime" / "gateway" / "proxy.py").exists():
                raise SystemExit(f"--baseline-src {args.baseline_src}: no gpustack_iac/runtime/gateway/proxy.py there")
            base = start_python_role(
                children, "gateway-baseline", proxy_cores, workdir,
                ["gateway", "--token-file", str(token_file), "--small-url", small_url, "--sse-url", f"http://127.0.0.1:{py_backend.port}"],
                source=args.baseline_src,
            )
            print(f"  baseline: {(workdir / 'gateway-baseline.log').read_text().strip()}")
            targets.append(("gateway baseline, 1 core", f"http://127.0.0.1:{base.port}/services/bench/small", token, base.process.pid))

        print("\nparsing alone (CPU us, best of 5 x 20,000, on the proxy core): a 7-field request head; a 6-field")
        print("response with a 3-byte body, through the upstream client's protocol object")
        heads = [("this checkout", None)] + ([("baseline", args.baseline_src)] if args.baseline_src is not None else [])
        for label, source in heads:
            port_file = workdir / f"heads-{label.replace(' ', '-')}.json"
            cmd = [*taskset(proxy_cores), sys.executable, str(Path(__file__).resolve()), "--role", "heads", "--port-file", str(port_file)]
            env = {**os.environ, "PYTHONPATH": str(source.resolve())} if source is not None else None
            subprocess.run(cmd, check=True, env=env, timeout=300)
            figures = json.loads(port_file.read_text())
            print(f"  {label:<30} request head {figures['request head']:6.2f} us   response {figures['response']:6.2f} us")
        h11_us = _h11_request_head_us()
        if h11_us is not None:
            print(f"  {'h11 (reference, pure Python)':<30} request head {h11_us:6.2f} us")

        os.sched_setaffinity(0, load_cores)
        _install_uvloop()  # the Python load generators below need all the speed they can get
        results: dict[str, LoadResult] = {}
        print(f"\nsmall requests, {args.connections} connections, {duration:g} s each")
        print("  (CPU us/req: user+sys CPU the server spent per request; req/s per core = 1e6 / that, the figure a")
        print("   dedicated core would reach - robust when other work shares the machine. Proxy rows count only the proxy.)")
        print(f"  {'target':<30} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'CPU us/req':>9} {'req/s/core':>11}")
        for label, url, tok, pid in targets:
            if have_wrk:
                run_wrk(url, tok, args.connections, 1, workdir, load_cores)  # warm-up: pools, caches
                cpu0 = cpu_seconds(pid)
                r = run_wrk(url, tok, args.connections, duration, workdir, load_cores)
            else:
                asyncio.run(closed_loop(url, tok, args.connections, 1))
                cpu0 = cpu_seconds(pid)
                r = asyncio.run(closed_loop(url, tok, args.connections, duration))
            if r.requests:
                r.cpu_us_per_request = (cpu_seconds(pid) - cpu0) / r.requests * 1e6
            results[label] = r
            print(f"  {label:<30} {fmt(r)}")
        gw_r = results["gateway, 1 core"]
        if have_nginx:
            ng_r = results["nginx proxy_pass, 1 worker"]
            print(f"  gateway / nginx throughput, measured: {gw_r.rps / ng_r.rps:.2f}x; per dedicated core (CPU-time based): "
                  f"{ng_r.cpu_us_per_request / gw_r.cpu_us_per_request:.2f}x (target >= 0.25x)")
        base_r = results.get("gateway baseline, 1 core")
        if base_r is not None and base_r.cpu_us_per_request and gw_r.cpu_us_per_request:
            print(f"  gateway CPU per request: {gw_r.cpu_us_per_request:.1f} us against the baseline's "
                  f"{base_r.cpu_us_per_request:.1f} us ({gw_r.cpu_us_per_request / base_r.cpu_us_per_request:.2f}x)")

        rate = max(50.0, gw_r.rps / 2)
        paced_cx = 32

        def paced_pair(target_rate: float) -> tuple[LoadResult, LoadResult]:
            # wrk paces far beyond what a Python client can; the Python open-loop client is the fallback.
            if have_wrk:
                d = run_wrk(f"{small_url}/small", None, paced_cx, args.paced_seconds, workdir, load_cores, rate=target_rate)
                g = run_wrk(f"http://127.0.0.1:{gw.port}/services/bench/small", token, paced_cx, args.paced_seconds, workdir, load_cores, rate=target_rate)
                return d, g
            d = asyncio.run(paced(f"{small_url}/small", None, target_rate, args.paced_seconds))
            g = asyncio.run(paced(f"http://127.0.0.1:{gw.port}/services/bench/small", token, target_rate, args.paced_seconds))
            return d, g

        client_kind = f"wrk, {paced_cx} connections each pausing {paced_cx}/rate s between requests" if have_wrk else "Python open-loop client"
        print(f"\nlatency at half the gateway's saturation: {rate:.0f} req/s paced, {args.paced_seconds:g} s, {client_kind}")
        d, g = paced_pair(rate)
        print(f"  {'direct backend':<30} {fmt(d)}")
        print(f"  {'gateway':<30} {fmt(g)}")
        print(f"  p50 overhead: {g.p50_ms - d.p50_ms:.3f} ms (target < 1 ms); achieved rates {d.rps:.0f} / {g.rps:.0f} req/s")
        light = 100.0
        print(f"latency at a light {light:.0f} req/s (the gateway's own cost per request, without queueing):")
        d, g = paced_pair(light)
        print(f"  {'direct backend':<30} {fmt(d)}")
        print(f"  {'gateway':<30} {fmt(g)}")
        print(f"  p50 overhead: {g.p50_ms - d.p50_ms:.3f} ms")

        if args.streams > 0:
            n_events = int(args.hold + 120)
            print(f"\n{args.streams} concurrent SSE streams through the gateway (one event per second each), held {args.hold:g} s")
            s = asyncio.run(
                hold_streams(f"http://127.0.0.1:{gw.port}/services/sse/sse?n={n_events}", token, args.streams, args.hold, gw.process.pid)
            )
            per_stream_kb = (s["rss_peak"] - s["rss_idle"]) / 1024 / args.streams
            print(f"  all {args.streams} open after {s['open_s']:.1f} s; streams still receiving while held: {int(s['live'])}")
            print(f"  gateway RSS: {s['rss_idle'] / 2**20:.1f} MB before, {s['rss_peak'] / 2**20:.1f} MB holding ({per_stream_kb:.1f} KB per stream)")
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


# --------------------------------------------------------------------------------------------------
# the data-plane comparison (issue 22): nginx, HAProxy and the Python gateway on the same core
# --------------------------------------------------------------------------------------------------

# The peers do the same work per request: a bearer check, a prefix rewrite (/services/<name>/x -> /x),
# keep-alive to the upstream. The token is in the configuration file, in the 0700 run directory.
NGINX_PEER = NGINX_HEAD + """  upstream small {{ server 127.0.0.1:{small}; keepalive 256; keepalive_requests 1000000; }}
  upstream sse {{ server 127.0.0.1:{sse}; keepalive 256; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    if ($http_authorization != "Bearer {token}") {{ return 401; }}
    proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;
    location /services/bench/ {{ proxy_pass http://small/; }}
    location /services/sse/ {{ proxy_pass http://sse/; }}
  }}
}}
"""

# HAProxy's floor: a hand-written minimal configuration doing the peers' work and nothing else (`http-reuse
# always`, no Lua, no normalisation, no X-Forwarded-*), so the gap between it and the rendered row is the
# renderer's features, and the gap to nginx is HAProxy's own.
HAPROXY_FLOOR = """
global
  nbthread 1
  maxconn 8000
  stats socket {dir}/{name}.sock mode 600 level admin
defaults
  mode http
  maxconn 8000
  timeout connect 5s
  timeout client 75s
  timeout server 120s
  timeout http-request 20s
  timeout http-keep-alive 75s
frontend data_plane
  bind 127.0.0.1:{port} backlog 4096
  http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {token}" }}
  use_backend sse if {{ path_beg /services/sse/ }}
  use_backend small if {{ path_beg /services/bench/ }}
backend small
  http-reuse always
  http-request replace-path ^/services/bench(/.*) \\1
  server s0 127.0.0.1:{small} maxconn 1000
backend sse
  http-reuse always
  http-request replace-path ^/services/sse(/.*) \\1
  server s0 127.0.0.1:{sse} maxconn 10000
"""




def role_streamer(port_file: Path) -> None:
    from gateway_sse import serve_streamer

    async def run() -> None:
        server = await serve_streamer()
        _write_port_file(port_file, server.sockets[0].getsockname()[1])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    _install_uvloop()
    asyncio.run(run())


def start_haproxy_floor(children: Children, name: str, cores: Sequence[int], workdir: Path, **values: object) -> Child:
    port = free_port()
    conf = workdir / f"{name}.cfg"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(HAPROXY_FLOOR.format(dir=workdir, name=name, port=port, **values))
    log = open(workdir / f"{name}.log", "wb")
    process = subprocess.Popen([*taskset(cores), "haproxy", "-db", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    log.close()
    child = Child(name, process, port)
    children.children.append(child)
    try:
        wait_for_port(port, process, name)
    except SystemExit as exc:
        raise SystemExit(f"{exc}: {(workdir / (name + '.log')).read_text()[-2000:]}") from None
    return child


def haproxy_binds(port: int, threads: int) -> str:
    """One listening socket per thread (SO_REUSEPORT): the kernel spreads new connections over them, where one
    shared socket lets whichever thread wakes first take a burst of connects (measured: 70 against 188 of 256)."""
    if threads == 1:
        return f"  bind 127.0.0.1:{port} backlog 4096"
    return "\n".join(f"  bind 127.0.0.1:{port} backlog 4096 thread {t}" for t in range(1, threads + 1))




class HaproxyPeer:
    """The project's HAProxy data plane as the gateway runs it (render.render_config through HaproxyDataPlane),
    serving the bench's two services; its processes inherit the proxy cores' affinity."""

    def __init__(self, workdir: Path, name: str, cores: Sequence[int], token: str, python_port: int, small: int, sse: int,
                 threads: int) -> None:
        from gpustack_iac.runtime.gateway.haproxy.dataplane import HaproxyDataPlane, PlaneOptions
        from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute, Upstream

        table = RoutingTable()
        table.set_service(ServiceRoute("bench", auth=True, model="bench-model",
                                       upstreams=(Upstream("small-0", "base", f"http://127.0.0.1:{small}"),)))
        table.set_service(ServiceRoute("sse", auth=True, model=None, upstreams=(Upstream("sse-0", "base", f"http://127.0.0.1:{sse}"),)))
        self.port = free_port()
        self.plane = HaproxyDataPlane(table, PlaneOptions(host="127.0.0.1", port=self.port, python_port=python_port,
                                                          directory=workdir / name, token=token, threads=threads))
        mine = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cores)  # haproxy and its worker inherit it
        try:
            self.plane.start()
        finally:
            os.sched_setaffinity(0, mine)
        self.socket = self.plane.files.admin_socket

    @property
    def pid(self) -> int:
        assert self.plane.process.pid is not None
        return self.plane.process.pid

    def stop(self) -> None:
        self.plane.stop()


def haproxy_cli(sock: Path, command: str) -> str:
    """One Runtime API command over the stats socket (the same socket the control plane uses)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        out = b""
        while piece := s.recv(65536):
            out += piece
    return out.decode()


@dataclass
class Peer:
    label: str
    port: int
    pid: int


@dataclass
class PeerFigures:
    cpu_us: list[float]
    p50_added_ms: list[float]
    ttfb_p99_ms: list[float]
    completed: list[int]
    errors: list[int]
    cpu_us_per_event: list[float]


def median(values: Sequence[float]) -> float:
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass
class Plan:
    """How much load each cell gets (`--quick` shrinks everything so the smoke test runs in seconds)."""

    duration: float
    repeats: int
    paced_seconds: float
    rate: float
    ttfb_streams: int
    many_streams: int
    events: int
    interval: float
    connections: int
    workdir: Path
    proxy_cores: list[int]
    load_cores: list[int]


def cpu_per_request(peer: Peer, token: str, plan: Plan) -> float:
    url = f"http://127.0.0.1:{peer.port}/services/bench/small"
    run_wrk(url, token, plan.connections, 1, plan.workdir, plan.load_cores)  # warm-up: pools, caches
    cpu0 = cpu_seconds(peer.pid)
    r = run_wrk(url, token, plan.connections, plan.duration, plan.workdir, plan.load_cores)
    if r.errors or not r.requests:
        print(f"    note: {peer.label}: {r.errors} errors of {r.requests} requests")
    return (cpu_seconds(peer.pid) - cpu0) / max(1, r.requests) * 1e6


def paced_p50(url: str, token: str | None, plan: Plan) -> float:
    return run_wrk(url, token, 32, plan.paced_seconds, plan.workdir, plan.load_cores, rate=plan.rate).p50_ms


def sse_cells(peer: Peer, token: str, plan: Plan) -> tuple[float, int, int, float]:
    """TTFB p99 of `ttfb_streams` streams started at once; then `many_streams` at once: completed, errors,
    and the proxy's CPU per event delivered."""
    from gateway_sse import run_streams

    ttfb_path = "/services/sse/sse?n=1&interval=0"
    ttfb = asyncio.run(run_streams("127.0.0.1", peer.port, ttfb_path, token, plan.ttfb_streams, 60))
    path = f"/services/sse/sse?n={plan.events}&interval={plan.interval}"
    cpu0 = cpu_seconds(peer.pid)
    many = asyncio.run(run_streams("127.0.0.1", peer.port, path, token, plan.many_streams, 120))
    cpu_event = (cpu_seconds(peer.pid) - cpu0) / max(1, many.events) * 1e6
    if many.error_kinds:
        print(f"    note: {peer.label}, {plan.many_streams} streams: errors {many.error_kinds}")
    return ttfb.ttfb_p99_ms(), many.completed, many.errors, cpu_event


def measure_peers(peers: list[Peer], direct_url: str, token: str, plan: Plan) -> dict[str, PeerFigures]:
    """Every cell `repeats` times, the peers interleaved within each round so that the machine's load
    drifts over all of them alike; the table shows medians."""
    figures = {p.label: PeerFigures([], [], [], [], [], []) for p in peers}
    for round_no in range(plan.repeats):
        print(f"  round {round_no + 1}/{plan.repeats}, load average {os.getloadavg()[0]:.2f}", flush=True)
        for peer in peers:
            f = figures[peer.label]
            f.cpu_us.append(cpu_per_request(peer, token, plan))
            direct = paced_p50(direct_url, None, plan)
            f.p50_added_ms.append(paced_p50(f"http://127.0.0.1:{peer.port}/services/bench/small", token, plan) - direct)
            ttfb, completed, errors, cpu_event = sse_cells(peer, token, plan)
            f.ttfb_p99_ms.append(ttfb)
            f.completed.append(completed)
            f.errors.append(errors)
            f.cpu_us_per_event.append(cpu_event)
    return figures


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs; NaN when theirs is zero (a quick run's CPU times can be below the clock tick)."""
    return ours / theirs if theirs else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_comparison(figures: dict[str, PeerFigures], nginx: str, plan: Plan) -> None:
    ng = figures[nginx]
    ng_cpu, ng_ttfb = median(ng.cpu_us), median(ng.ttfb_p99_ms)
    ng_done, ng_event = median(ng.completed), median(ng.cpu_us_per_event)
    print(f"\n  medians of {plan.repeats}; targets against nginx from the same run")
    print(f"  {'data plane':<24} {'CPU us/req':>10} {'nginx/ours':>10} {'p50 added ms':>12} "
          f"{'TTFB p99 ms':>11} {'completed':>9} {'errors':>6} {'CPU us/event':>12}")
    for label, f in figures.items():
        cpu = median(f.cpu_us)
        print(f"  {label:<24} {cpu:>10.1f} {ratio(ng_cpu, cpu):>10.2f} {median(f.p50_added_ms):>12.3f} "
              f"{median(f.ttfb_p99_ms):>11.1f} {median(f.completed):>9.0f} {max(f.errors):>6} {median(f.cpu_us_per_event):>12.1f}")
    for label, f in figures.items():
        if label == nginx:
            continue
        cpu_ratio = ratio(ng_cpu, median(f.cpu_us))
        checks = [
            (f"CPU per request: nginx/ours {cpu_ratio:.2f} (target >= 0.8)", cpu_ratio >= 0.8),
            (f"added p50 at {plan.rate:.0f} req/s: {median(f.p50_added_ms):.3f} ms (target < 0.2 ms)", median(f.p50_added_ms) < 0.2),
            (f"{plan.ttfb_streams} streams TTFB p99: {ratio(median(f.ttfb_p99_ms), ng_ttfb):.2f}x nginx (target <= 1.2x)",
             median(f.ttfb_p99_ms) <= 1.2 * ng_ttfb),
            (f"{plan.many_streams} streams: {max(f.errors)} errors, completed {median(f.completed) / max(1, ng_done):.0%} "
             f"of nginx's (target 0 errors, >= 95%)", max(f.errors) == 0 and median(f.completed) >= 0.95 * ng_done),
            (f"CPU per SSE event: {ratio(median(f.cpu_us_per_event), ng_event):.2f}x nginx (target <= 1.3x)",
             median(f.cpu_us_per_event) <= 1.3 * ng_event),
        ]
        print(f"  {label}:")
        for text, ok in checks:
            print(f"    {verdict(ok)}  {text}")


@dataclass
class Setup:
    peers: list[Peer]
    direct_url: str
    token: str
    python_port: int
    small: int
    sse: int


def start_peers(children: Children, workdir: Path, token: str, proxy_cores: list[int], up_cores: list[int]) -> Setup:
    """The fast upstreams (nginx `return 200`, the asyncio streamer) on the other core, then the three
    data planes on the proxy core (HAProxy's configuration names the Python gateway as its activator)."""
    token_file = workdir / "token"
    from gpustack_iac.runtime.auth import write_token_file

    write_token_file(token_file, token)
    static = start_nginx(children, "static", up_cores, workdir, NGINX_STATIC, workers=len(up_cores))
    streamer = start_python_role(children, "streamer", up_cores, workdir, ["streamer"])
    nginx = start_nginx(children, "nginx", proxy_cores, workdir, NGINX_PEER, workers=1, small=static.port, sse=streamer.port,
                        token=token)
    gw = start_python_role(
        children, "gateway", proxy_cores, workdir,
        ["gateway", "--token-file", str(token_file), "--small-url", f"http://127.0.0.1:{static.port}",
         "--sse-url", f"http://127.0.0.1:{streamer.port}"],
    )
    haproxy = HaproxyPeer(workdir, "haproxy", proxy_cores, token, gw.port, static.port, streamer.port, threads=1)
    children.planes.append(haproxy)
    floor = start_haproxy_floor(children, "haproxy-floor", proxy_cores, workdir, small=static.port, sse=streamer.port, token=token)
    peers = [Peer("nginx, 1 worker", nginx.port, nginx.process.pid),
             Peer("HAProxy, 1 thread", haproxy.port, haproxy.pid),
             Peer("HAProxy floor config", floor.port, floor.process.pid),
             Peer("Python gateway", gw.port, gw.process.pid)]
    return Setup(peers, f"http://127.0.0.1:{static.port}/small", token, gw.port, static.port, streamer.port)


def activity_per_thread(sock: Path) -> dict[str, list[int]]:
    """`show activity` lines as per-thread counters: `accepted: 64 [ 31 33 ]` -> [31, 33]."""
    counters: dict[str, list[int]] = {}
    for line in haproxy_cli(sock, "show activity").splitlines():
        m = re.match(r"(\w+):\s+\d+\s+\[([\d ]+)\]", line)
        if m:
            counters[m.group(1)] = [int(x) for x in m.group(2).split()]
    return counters


def spread(values: Sequence[int]) -> float:
    """Largest departure from the mean, as a fraction of it (0.2 = within 20%)."""
    mean = sum(values) / len(values) if values else 0
    return max(abs(v - mean) for v in values) / mean if mean else float("nan")


def multi_core(children: Children, workdir: Path, setup: Setup, plan: Plan) -> None:
    """HAProxy with nbthread 2 over both CPUs: how its threads share connections and work (`show activity`
    per thread), and its throughput against one thread on its own core."""
    both = sorted(set(plan.proxy_cores) | set(plan.load_cores))[:2]
    if len(both) < 2:
        print("\nmulti-core: one CPU here, unmeasured")
        return
    conns = max(plan.connections, 256)
    print(f"\nmulti-core: HAProxy nbthread 2 on cores {both} (wrk and the upstream share them), {conns} connections")
    peer = HaproxyPeer(workdir, "haproxy-2t", both, setup.token, setup.python_port, setup.small, setup.sse, threads=2)
    children.planes.append(peer)
    two = thread_spread(peer, setup.token, conns, both, plan)
    one = run_wrk(f"http://127.0.0.1:{setup.peers[1].port}/services/bench/small", setup.token, conns, plan.duration, workdir,
                  plan.load_cores, threads=2)
    print(f"  throughput: 2 threads on 2 cores {two.rps:,.0f} req/s against 1 thread on 1 core {one.rps:,.0f} req/s "
          f"({two.rps / one.rps:.2f}x; the 2-thread run shares its cores with wrk and the upstream, so this understates it)")
    print(f"  beyond {len(both)} cores: unmeasured (no bigger machine here)")


def thread_spread(peer: HaproxyPeer, token: str, conns: int, cores: list[int], plan: Plan) -> LoadResult:
    url = f"http://127.0.0.1:{peer.port}/services/bench/small"
    run_wrk(url, token, conns, 1, plan.workdir, cores, threads=2)  # warm-up
    before = activity_per_thread(peer.socket)
    result = run_wrk(url, token, conns, plan.duration, plan.workdir, cores, threads=2)
    after = activity_per_thread(peer.socket)
    for key in ("accepted", "stream_calls", "poll_io"):
        if key in after and key in before:
            per = [a - b for a, b in zip(after[key], before[key])]
            print(f"  {key:<13} per thread {per}: largest departure from the mean {spread(per):.0%} (target within 20%)"
                  f"  {verdict(spread(per) <= 0.2)}")
    return result


def run_comparison(args: argparse.Namespace) -> int:
    for tool in ("nginx", "haproxy", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH: apt-get install {tool} (the comparison needs nginx, haproxy and wrk)")
    proxy_cores, _, load_cores = core_layout()
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    plan = Plan(duration=1 if args.quick else min(max(args.duration, 1.0), 60.0), repeats=1 if args.quick else args.repeats,
                paced_seconds=1 if args.quick else args.paced_seconds, rate=args.rate,
                ttfb_streams=20 if args.quick else 500, many_streams=50 if args.quick else args.streams,
                events=3 if args.quick else 10, interval=0.05 if args.quick else 0.5,
                connections=args.connections, workdir=workdir, proxy_cores=proxy_cores, load_cores=load_cores)
    print("gpustack-iac data-plane comparison (loopback only)")
    print(f"  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs; proxies pinned to "
          f"{proxy_cores}, upstreams and load generators to {load_cores}")
    print(f"  {haproxy_version()}; nginx and wrk from PATH; HAProxy configuration: rendered by "
          f"gpustack_iac.runtime.gateway.haproxy (two services, bearer auth)")
    print(f"  cells: wrk {plan.connections} connections {plan.duration:g} s (CPU us/req = the proxy's CPU time / requests);"
          f" p50 at {plan.rate:.0f} req/s paced vs direct; {plan.ttfb_streams} SSE streams at once (TTFB p99);"
          f" {plan.many_streams} streams at once x {plan.events} events every {plan.interval:g} s")
    children = Children()
    try:
        token = secrets_token()
        setup = start_peers(children, workdir, token, proxy_cores, load_cores)
        os.sched_setaffinity(0, load_cores)
        figures = measure_peers(setup.peers, setup.direct_url, token, plan)
        print_comparison(figures, setup.peers[0].label, plan)
        multi_core(children, workdir, setup, plan)
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0].split(" - ")[0] if out else "HAProxy (version unknown)"


def secrets_token() -> str:
    from gpustack_iac.runtime.auth import new_token

    return new_token()


def _h11_request_head_us() -> float | None:
    try:
        import h11
    except ImportError:
        return None

    def parse() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST_HEAD)
        conn.next_event()

    return _cpu_us(parse, 5000)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
