"""Container replicas against process replicas on one agent: start-to-ready (the first HTTP 200 from
the replica's URL) and the agent's CPU time per start.

The same server (busybox httpd) runs both ways, so the difference is the engine's cost: `docker
run` through the engine (Docker, or our own `podman system service` where none answers) against a
plain process. The process replica is the peer measured in the same run. The image is built here
from busybox-static; everything is stopped at the end.

    .venv/bin/python bench/containers.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the engine and image helpers

from gpustack_iac.runtime import procs  # noqa: E402
from gpustack_iac.runtime.auth import new_token, write_token_file  # noqa: E402
from gpustack_iac.runtime.client import AgentClient  # noqa: E402
from tests.support.containers import build_image, container_engine  # noqa: E402

SERVE = "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec {busybox}httpd -f -p {port} -h /tmp/www"


def wait_ok(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def agent_cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def start_to_ready(url: str, token: str, spec: dict[str, Any], agent_pid: int) -> tuple[float, float]:
    """Seconds from the start request to the first 200, and the agent's CPU seconds meanwhile."""
    async def call(op: str) -> Any:
        async with AgentClient(url, token) as client:
            return await (client.start(spec) if op == "start" else client.stop(spec["id"], grace=5.0))

    cpu0, t0 = agent_cpu(agent_pid), time.monotonic()
    replica = asyncio.run(call("start"))
    wait_ok(replica["url"] + "/")
    took, cpu = time.monotonic() - t0, agent_cpu(agent_pid) - cpu0
    asyncio.run(call("stop"))
    return took, cpu


def run(rounds: int) -> None:
    with container_engine([]) as engine, tempfile.TemporaryDirectory(prefix="gpustack-bench-containers-") as tmp:
        root = Path(tmp)
        image = build_image(engine, "localhost/gpustack-bench-web:1")
        token = new_token()
        write_token_file(root / "token", token)
        info = procs.start_daemon(
            [sys.executable, "-m", "gpustack_iac.runtime.agent", "--host", "127.0.0.1", "--port", "0",
             "--token-file", str(root / "token"), "--state-dir", str(root / "state"), "--port-file", str(root / "port.json")],
            port_file=root / "port.json", log_file=root / "agent.log", env={**os.environ, **engine.env})
        url = f"http://127.0.0.1:{info.ports['port']}"
        results: dict[str, list[tuple[float, float]]] = {"container": [], "process": []}
        try:
            for i in range(rounds):
                results["container"].append(start_to_ready(url, token, {
                    "id": f"bench-c{i}", "service": "bench", "image": image, "commands": [SERVE.format(busybox="", port=8000)],
                    "container": {"port": 8000}}, info.pid))
                results["process"].append(start_to_ready(url, token, {
                    "id": f"bench-p{i}", "service": "bench", "commands": [SERVE.format(busybox="busybox ", port="$PORT")],
                    "working_dir": str(root)}, info.pid))
        finally:
            procs.stop_process(info.pid, info.create_time, grace=5.0)
        leftovers = engine.containers("gpustack-bench-")
        engine.run("rmi", image, check=False)
    print(f"{rounds} rounds, one agent, busybox httpd both ways; engine: {' '.join(engine.client)}")
    for kind, rows in results.items():
        ready = [r[0] for r in rows]
        cpu = [r[1] for r in rows]
        print(f"{kind:9s} start-to-ready  median {statistics.median(ready):6.2f} s  max {max(ready):6.2f} s   "
              f"agent CPU per start  median {statistics.median(cpu) * 1000:6.0f} ms")
    print(f"containers left behind: {leftovers or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    run(parser.parse_args().rounds)


if __name__ == "__main__":
    main()
