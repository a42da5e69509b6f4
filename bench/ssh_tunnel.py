"""Reaching a replica on an SSH host: `ssh -N -L` subprocess (what the controller uses) next to an
asyncssh local forward in the caller's own event loop (the peer).

A small HTTP server listens on 127.0.0.1 inside a test host's network namespace; an aiohttp client
in this process (standing in for the gateway) sends N keep-alive requests with C in flight through
each forward. Printed: requests per second, and the CPU seconds per 1,000 requests spent in this
process (the gateway's loop) and in the ssh process. Needs root, openssh-server and asyncssh
(`pip install asyncssh`; not a dependency of the package).

    .venv/bin/python bench/ssh_tunnel.py [--requests 3000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpustack_iac.runtime.tunnels import Forward, TunnelSpec  # noqa: E402
from tests.ssh.hosts import TestHosts, create_hosts  # noqa: E402

SERVER = (
    "import sys\nfrom http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def do_GET(self):\n"
    "        body = b'x' * 512\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)
REMOTE_PORT = 18080


async def load(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) for `requests` GETs."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async with session.get(url) as r:  # warm the pool
            await r.read()
        remaining = requests
        cpu0, t0 = time.process_time(), time.perf_counter()

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url) as r:
                    await r.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, time.process_time() - cpu0


async def via_ssh(hosts: TestHosts, requests: int, concurrency: int) -> tuple[float, float, float]:
    h = hosts.hosts[0]
    key = h.host_pubkey.read_text().split()
    spec = TunnelSpec(name="bench", hostname=h.address, port=h.port, user=h.user, identity_file=str(hosts.client_key),
                      host_key=f"{key[0]} {key[1]}", remote_port=REMOTE_PORT)
    with tempfile.TemporaryDirectory(prefix="gsiac-bench-kh-") as tmp:
        known = Path(tmp) / "known_hosts"
        known.write_text(f"gpustack-bench {key[0]} {key[1]}\n")
        fwd = Forward(spec, known, REMOTE_PORT)
        try:
            assert await fwd.ensure(), "ssh -L did not open"
            assert fwd.proc is not None
            ssh_proc = psutil.Process(fwd.proc.pid)
            before = sum(ssh_proc.cpu_times()[:2])
            wall, cpu = await load(f"http://127.0.0.1:{fwd.local_port}/", requests, concurrency)
            ssh_cpu = sum(ssh_proc.cpu_times()[:2]) - before
        finally:
            await fwd.close()
    return wall, cpu, ssh_cpu


async def via_asyncssh(hosts: TestHosts, requests: int, concurrency: int) -> tuple[float, float, float]:
    import asyncssh  # noqa: PLC0415 - the peer only

    h = hosts.hosts[0]
    async with asyncssh.connect(h.address, port=h.port, username=h.user, client_keys=[str(hosts.client_key)],
                                known_hosts=str(hosts.known_hosts)) as conn:
        listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", REMOTE_PORT)
        wall, cpu = await load(f"http://127.0.0.1:{listener.get_port()}/", requests, concurrency)
        listener.close()
    return wall, cpu, 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    hosts = create_hosts(1)
    h = hosts.hosts[0]
    argv = [sys.executable, "-c", SERVER, str(REMOTE_PORT)]
    server = subprocess.Popen(["ip", "netns", "exec", h.netns, *argv] if h.netns else argv)
    try:
        time.sleep(1.0)
        print(f"host: {hosts.mode}; {args.requests} requests, {args.concurrency} in flight, 512-byte answers")
        print(f"{'forward':<28} {'req/s':>8} {'gateway CPU s/1k req':>21} {'ssh CPU s/1k req':>17}")
        for name, fn in (("ssh -N -L (subprocess)", via_ssh), ("asyncssh (in-process)", via_asyncssh)):
            try:
                wall, cpu, ssh_cpu = asyncio.run(fn(hosts, args.requests, args.concurrency))
            except ImportError:
                print(f"{name:<28} skipped: pip install asyncssh")
                continue
            k = args.requests / 1000
            print(f"{name:<28} {args.requests / wall:>8.0f} {cpu / k:>21.3f} {ssh_cpu / k:>17.3f}", flush=True)
    finally:
        server.kill()
        server.wait()
        hosts.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
