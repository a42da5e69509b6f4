"""A task run as a resource: creating it starts a task runner (gpustack_iac.runtime.tasks) on this
machine, which talks to the agents over their API, so the same resource serves every backend whose
agents it can reach (local, SSH fleets).

A finished run stays in state (read finds its status file), so a later `up` does not run it again;
a changed definition replaces it, which is a new run. Deleting it stops a run still going.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime import sync_client as http
from gpustack_iac.runtime.tunnels import forwarded_agent_url
from gpustack_iac.runtime import envpolicy, procs
from gpustack_iac.runtime.tasks.schedule import CLOCK_SPEED_ENV
from gpustack_iac.runtime.tasks.status import FINAL_STATES, read_status

START_TIMEOUT = 120.0
TOKENS_ENV = "GPUSTACK_TASK_TOKENS"


class TaskNotStarted(RuntimeApiError):
    """The task runner did not get the task's nodes started."""


def _wait_started(root: Path, pid: int, created: float, timeout: float) -> dict[str, Any]:
    """Until every node of the first attempt runs, the run waits to retry, or it already ended."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        status = read_status(root)
        if status is not None:
            attempts = status.get("attempts") or []
            nodes = attempts[-1].get("nodes", []) if attempts else []
            if status["state"] != "running" or (len(nodes) == status.get("nodes") and all(n.get("started_at") for n in nodes)):
                return status
        if not procs.is_alive(pid, created) and (status is None or status.get("state") == "running"):
            break
        time.sleep(0.2)
    log = (root / "runner.log").read_text(errors="replace")[-2000:] if (root / "runner.log").exists() else ""
    raise TaskNotStarted(f"task runner in {root} did not start the task within {timeout:.0f} s" + (f":\n{log}" if log else ""))


def _stop_recorded_nodes(root: Path, hosts: list[dict[str, Any]]) -> None:
    """Delete every node replica the run's status file names (404s and unreachable hosts are skipped)."""
    status = read_status(root) or {}
    by_name = {h["name"]: h for h in hosts}
    replicas: dict[str, list[str]] = {}
    for attempt in status.get("attempts") or []:
        for node in attempt.get("nodes") or []:
            if node.get("host") in by_name:
                replicas.setdefault(str(node["host"]), []).append(str(node["replica"]))
    for name, ids in replicas.items():
        host = by_name[name]
        with forwarded_agent_url(str(host["name"]), str(host["url"]), host.get("tunnel")) as url:
            for replica in ids:
                if url is None:
                    break
                try:
                    http.call("DELETE", url, f"/v1/replicas/{replica}?grace=10", host["token"], timeout=40)
                except RuntimeApiError:
                    pass


class TaskProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        root = Path(props["state_dir"])
        # A run whose runner died (a reboot, kill -9) may have left nodes running: stop them first.
        _stop_recorded_nodes(root, props.get("hosts") or [])
        shutil.rmtree(root, ignore_errors=True)  # a new run starts with empty logs
        root.mkdir(parents=True, mode=0o700)
        hosts = props["hosts"]
        definition = {**props["definition"], "run_id": props["run_id"],
                      "hosts": [{k: v for k, v in h.items() if k != "token"} for h in hosts]}
        (root / "task.json").write_text(json.dumps(definition, indent=1))
        # The allow-listed daemon environment (no passphrase, no cloud credentials) plus the tokens.
        env = envpolicy.daemon_env(os.environ, extra=(CLOCK_SPEED_ENV,))
        env[TOKENS_ENV] = json.dumps({h["name"]: h["token"] for h in hosts})
        info = procs.start_daemon(
            [sys.executable, "-m", "gpustack_iac.runtime.tasks", "--definition", str(root / "task.json"),
             "--state-dir", str(root), "--port-file", str(root / "runner.json")],
            port_file=root / "runner.json", log_file=root / "runner.log", env=env, timeout=60.0)
        status = _wait_started(root, info.pid, info.create_time, float(props.get("start_timeout") or START_TIMEOUT))
        outs = {**props, "pid": info.pid, "create_time": info.create_time, "started_state": status["state"]}
        return CreateResult(id_=str(props["definition"]["name"]), outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        status = read_status(Path(props["state_dir"]))
        if status is None:
            return ReadResult(id_=None, outs={})
        # A finished run stays (not re-run); an unfinished one whose runner is gone was interrupted
        # and reads as gone, so the next `up` runs it again.
        if status.get("state") not in FINAL_STATES and not procs.is_alive(int(props.get("pid") or 0), props.get("create_time")):
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("run_id", "state_dir") if olds.get(k) != news.get(k)]
        if replaces:
            return DiffResult(changes=True, replaces=replaces, delete_before_replace=True)
        return DiffResult(changes=olds.get("hosts") != news.get("hosts"))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # New agent URLs or tokens matter only to the next run; the running one keeps its own.
        return UpdateResult(outs={**olds, "hosts": news["hosts"]})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        root = Path(props["state_dir"])
        procs.stop_process(int(props.get("pid") or 0), props.get("create_time"), grace=60.0)
        # A runner that died (a reboot) leaves its nodes to us: stop whatever it recorded.
        _stop_recorded_nodes(root, props.get("hosts") or [])
        shutil.rmtree(root, ignore_errors=True)


class Task(Resource, module="workload", name="Task"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["hosts"])
        super().__init__(TaskProvider(), name, {"started_state": None, **props}, pulumi.ResourceOptions.merge(opts, secret))
