"""Agent footprint: RSS idle and while supervising N replicas, and its CPU while it does.

Peers measured in the same run: a bare Python interpreter (the floor of any Python agent) and
a minimal aiohttp server (the floor of one built on the same framework). Target: agent RSS under
60 MB. Everything runs on loopback in a temporary directory and is stopped at the end.

    .venv/bin/python bench/agent.py [--replicas 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psutil

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.runtime.client import AgentClient

REPLICA = "import time\nwhile True:\n    time.sleep(3600)\n"
AIOHTTP_SERVER = (
    "import sys\nfrom aiohttp import web\n"
    "app = web.Application()\napp.router.add_get('/', lambda r: web.Response(text='ok'))\n"
    "web.run_app(app, host='127.0.0.1', port=0, print=None)\n"
)


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def peer_rss(code: str, settle: float = 1.5) -> float:
    proc = psutil.Popen([sys.executable, "-c", code])
    try:
        time.sleep(settle)
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)


async def supervise(url: str, token: str, replicas: int, workdir: Path) -> None:
    script = workdir / "replica.py"
    script.write_text(REPLICA)
    async with AgentClient(url, token) as client:
        for i in range(replicas):
            await client.start({"id": f"bench-{i}", "service": "bench", "group": "g", "commands": [f"{sys.executable} {script}"],
                                "env": {}, "working_dir": str(workdir), "image": None, "gpus": [], "labels": {}})


async def stop_all(url: str, token: str) -> None:
    async with AgentClient(url, token) as client:
        for replica in await client.list():
            await client.stop(replica["id"], grace=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long CPU is sampled while supervising")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gpustack-bench-agent-") as tmp:
        root = Path(tmp)
        token = new_token()
        write_token_file(root / "token", token)
        info = procs.start_daemon(
            [sys.executable, "-m", "gpustack_iac.runtime.agent", "--host", "127.0.0.1", "--port", "0",
             "--token-file", str(root / "token"), "--state-dir", str(root / "state"), "--port-file", str(root / "port.json")],
            port_file=root / "port.json", log_file=root / "agent.log")
        url = f"http://127.0.0.1:{info.ports['port']}"
        try:
            time.sleep(1.0)
            idle = rss_mb(info.pid)
            asyncio.run(supervise(url, token, args.replicas, root))
            time.sleep(2.0)
            agent = psutil.Process(info.pid)
            agent.cpu_percent(None)
            time.sleep(args.seconds)
            cpu = agent.cpu_percent(None)
            busy = rss_mb(info.pid)
            asyncio.run(stop_all(url, token))
        finally:
            procs.stop_process(info.pid, info.create_time, grace=5.0)
    bare = peer_rss("import time; time.sleep(60)")
    floor = peer_rss(AIOHTTP_SERVER)
    print(f"agent RSS idle                      {idle:6.1f} MB")
    print(f"agent RSS with {args.replicas:3d} replicas          {busy:6.1f} MB   (CPU {cpu:.1f}% over {args.seconds:.0f} s)")
    print(f"peer: bare python interpreter       {bare:6.1f} MB")
    print(f"peer: minimal aiohttp server        {floor:6.1f} MB")
    print(f"target agent RSS < 60 MB: {'met' if max(idle, busy) < 60 else 'MISSED'}")


if __name__ == "__main__":
    main()
