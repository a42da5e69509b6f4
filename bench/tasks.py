"""Task overhead: wall time from asking for an N-node task of `true` to its end, through the task
runner (placement, start, watch, log copy, cleanup), next to the same N replicas started,
polled to their exit and deleted straight through the agent API (the floor any runner adds to).

    .venv/bin/python bench/tasks.py [--nodes 1 2 4] [--runs 5]

Agents run on loopback in a temporary directory and are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.agent.offline import stop_all_replicas
from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.runtime.client import AgentClient
from gpustack_iac.runtime.tasks.model import parse_task
from gpustack_iac.runtime.tasks.runner import TaskRunner


def start_agent(root: Path, i: int) -> tuple[procs.DaemonInfo, str, Path]:
    home = root / f"agent{i}"
    home.mkdir()
    token = new_token()
    write_token_file(home / "token", token)
    info = procs.start_daemon([sys.executable, "-m", "gpustack_iac.runtime.agent", "--host", "127.0.0.1", "--port", "0",
                               "--token-file", str(home / "token"), "--state-dir", str(home / "state"),
                               "--port-file", str(home / "port"), "--name", f"h{i}"],
                              port_file=home / "port", log_file=home / "agent.log")
    return info, token, home


async def through_runner(agents: list[tuple[str, str]], nodes: int, root: Path, n: int) -> float:
    hosts = [{"name": f"h{i}", "url": url} for i, (url, _) in enumerate(agents[:nodes])]
    task = parse_task({"name": "bench", "run_id": f"{n:012d}", "nodes": nodes, "commands": ["true"], "hosts": hosts,
                       "poll": 0.05})
    tokens = {f"h{i}": token for i, (_, token) in enumerate(agents[:nodes])}
    began = time.perf_counter()
    result = await TaskRunner(task, tokens, root / f"run{n}", random.Random(n)).run()
    assert result == "succeeded", result
    return time.perf_counter() - began


async def direct(agents: list[tuple[str, str]], nodes: int, n: int) -> float:
    clients = [AgentClient(url, token) for url, token in agents[:nodes]]
    began = time.perf_counter()
    ids = [f"direct-{n}-{i}" for i in range(nodes)]
    await asyncio.gather(*(c.start({"id": rid, "commands": ["true"], "restart": "never"}) for c, rid in zip(clients, ids)))
    pending = set(range(nodes))
    while pending:
        for i in list(pending):
            replica = await clients[i].get(ids[i])
            if replica and replica.get("finished_at") is not None:
                pending.discard(i)
        await asyncio.sleep(0.05)
    await asyncio.gather(*(c.stop(rid) for c, rid in zip(clients, ids)))
    elapsed = time.perf_counter() - began
    for c in clients:
        await c.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = [start_agent(root, i) for i in range(max(args.nodes))]
        agents = [(f"http://127.0.0.1:{info.ports['port']}", token) for info, token, _ in started]
        try:
            print(f"{'nodes':>5}  {'task runner (median s)':>22}  {'agent API only (median s)':>25}")
            n = 0
            for nodes in args.nodes:
                runner, floor = [], []
                for _ in range(args.runs):
                    n += 1
                    runner.append(asyncio.run(through_runner(agents, nodes, root, n)))
                    floor.append(asyncio.run(direct(agents, nodes, n)))
                print(f"{nodes:>5}  {statistics.median(runner):>22.3f}  {statistics.median(floor):>25.3f}")
        finally:
            for info, _, home in started:
                procs.stop_process(info.pid, info.create_time, grace=5)
                stop_all_replicas(home / "state", grace=2)


if __name__ == "__main__":
    main()
