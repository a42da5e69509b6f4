"""`python -m gpustack_iac.runtime.tasks`: run one task to its end, then exit; a scheduled task
runs at each of its cron times until it is stopped.

Started detached by the task provider (providers/task.py). Agent tokens arrive in the
environment variable GPUSTACK_TASK_TOKENS (a JSON object, host name → token) and are removed
from the environment at once. SIGTERM stops the task's nodes and ends the run as "stopped".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.tasks.model import parse_task
from gpustack_iac.runtime.tasks.runner import TaskRunner
from gpustack_iac.runtime.tasks.schedule import CLOCK_SPEED_ENV, Clock, ScheduledTask

TOKENS_ENV = "GPUSTACK_TASK_TOKENS"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gpustack_iac.runtime.tasks", description="gpustack-iac task runner")
    parser.add_argument("--definition", type=Path, required=True, help="the task definition (JSON)")
    parser.add_argument("--state-dir", type=Path, required=True, help="where status.json and the node logs go")
    parser.add_argument("--port-file", type=Path, help="write {pid} here once the run has begun")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    tokens = json.loads(os.environ.pop(TOKENS_ENV, "{}") or "{}")
    task = parse_task(json.loads(args.definition.read_text()))
    args.state_dir.mkdir(parents=True, exist_ok=True)
    runner: TaskRunner | ScheduledTask
    if task.schedule is not None:
        runner = ScheduledTask(task, tokens, args.state_dir, Clock(float(os.environ.get(CLOCK_SPEED_ENV) or 1.0)))
    else:
        runner = TaskRunner(task, tokens, args.state_dir)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.request_stop)
    run = asyncio.create_task(runner.run())
    if args.port_file:
        procs.write_port_file(args.port_file, {"pid": os.getpid()})
    result = await run
    return 0 if result == "succeeded" or task.schedule is not None else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
