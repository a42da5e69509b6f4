"""One task run: place its nodes on distinct hosts, start them together, watch them, stop the
rest when one fails, retry with back-off by policy, and keep `status.json` and the node logs
current. Backend-neutral: it only talks to agents over their HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpustack_iac.errors import AgentApiError, RuntimeApiError
from gpustack_iac.runtime.backoff import Backoff
from gpustack_iac.runtime.client import AgentClient
from gpustack_iac.runtime.controller.placement import AgentView, HostFacts, Reservation, fit, label_mismatch
from gpustack_iac.runtime.tasks.model import HostDef, TaskDef
from gpustack_iac.runtime.tasks.status import node_log, write_status
from gpustack_iac.runtime.tunnels import HostTunnels, TunnelSpec

UNREACHABLE_AFTER = 15.0  # seconds an agent may not answer before its node counts as interrupted
FOLLOW_GRACE = 30.0  # seconds a node's log copy may take to finish once the node is deleted


@dataclass
class Node:
    rank: int
    host: HostDef
    replica: str
    gpus: tuple[int, ...] = ()
    state: str = "starting"
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stopped: bool = False  # stopped by the runner (another node failed, max_duration, destroy)
    unreachable_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host.name, "replica": self.replica, "state": self.state,
                "exit_code": self.exit_code, "started_at": self.started_at, "finished_at": self.finished_at,
                "stopped": self.stopped, "gpus": list(self.gpus)}


@dataclass
class Outcome:
    result: str  # "succeeded", "failed", "stopped"
    event: str | None = None  # the retry event a failure counts as: "error", "no-capacity", "interruption"
    reason: str = ""


@dataclass
class Attempt:
    number: int
    started_at: float
    nodes: list[Node] = field(default_factory=list)
    finished_at: float | None = None
    outcome: Outcome | None = None
    delay_before: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"number": self.number, "started_at": self.started_at, "finished_at": self.finished_at,
                               "delay_before": round(self.delay_before, 3), "nodes": [n.to_json() for n in self.nodes]}
        if self.outcome is not None:
            out.update(result=self.outcome.result, event=self.outcome.event, reason=self.outcome.reason)
        return out


def node_env(task: TaskDef, nodes: list[Node], master_port: int, attempt: int) -> list[dict[str, str]]:
    """Each node's environment: ours, dstack's names for the same values, and torchrun's."""
    ips = [n.host.ip for n in nodes]
    gpus_per_node = len(nodes[0].gpus) if nodes else 0
    out = []
    for node in nodes:
        common = {"NODE_RANK": str(node.rank), "NODES_NUM": str(len(nodes)), "MASTER_NODE_IP": ips[0],
                  "NODES_IPS": "\n".join(ips), "GPUS_PER_NODE": str(gpus_per_node), "GPUS_NUM": str(gpus_per_node * len(nodes))}
        env = dict(task.env)
        env.update({f"GPUSTACK_{k}": v for k, v in common.items()})
        env.update({f"DSTACK_{k}": v for k, v in common.items()})
        env.update(MASTER_ADDR=ips[0], MASTER_PORT=str(master_port), WORLD_SIZE=str(len(nodes)), NODE_RANK=str(node.rank),
                   DSTACK_RUN_NAME=task.name, GPUSTACK_TASK=task.name, GPUSTACK_TASK_ATTEMPT=str(attempt))
        out.append(env)
    return out


def _container(task: TaskDef) -> dict[str, Any] | None:
    """A task's containers share their host's network: nodes rendezvous at the hosts' addresses
    (DSTACK_MASTER_NODE_IP, MASTER_PORT) as they would in process mode."""
    if task.image is None:
        return None
    c, auth = task.container, task.container.registry_auth
    return {"entrypoint": c.entrypoint, "user": c.user, "privileged": c.privileged, "shm_size": c.shm_size, "host_network": True,
            "registry_auth": {"username": auth.username, "password": auth.password} if auth is not None else None}


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


StatusOverlay = Callable[[dict[str, Any]], dict[str, Any]]


class TaskRunner:
    """One run of a task. A scheduled task (runtime/tasks/schedule.py) makes one per cron time:
    `run_number` then tells its replicas and log sections apart, and `overlay` adds the schedule
    to every status the run writes."""

    def __init__(self, task: TaskDef, tokens: dict[str, str], state_dir: Path, rng: random.Random | None = None,
                 run_number: int = 0, overlay: StatusOverlay | None = None) -> None:
        self.task = task
        self.run_number = run_number
        self._overlay = overlay
        self.state_dir = state_dir
        self._tokens = tokens
        self._rng = rng or random.Random()
        self._clients: dict[str, AgentClient] = {}
        self._stop = asyncio.Event()
        self._attempts: list[Attempt] = []
        self._state = "starting"
        self._reason = ""
        self._next_retry_at: float | None = None
        self._started_at = time.time()
        self._finished_at: float | None = None
        self._followers: list[asyncio.Task[None]] = []
        self._tunnels: dict[str, HostTunnels] = {}
        self._free_ports: dict[str, int] = {}  # host → a port its agent found free, from the last placement

    def request_stop(self) -> None:
        self._stop.set()

    def client(self, host: HostDef) -> AgentClient:
        if host.name not in self._clients:
            tunnels = self._tunnels.get(host.name)
            url = tunnels.agent_url() if tunnels is not None else host.url
            self._clients[host.name] = AgentClient(url, self._tokens.get(host.name, ""))
        return self._clients[host.name]

    async def _open_tunnels(self) -> None:
        """Forwards to the agents of SSH fleet hosts (bound to 127.0.0.1 there). A host whose forward
        does not open reads as unreachable at placement, like any agent that does not answer."""
        for host in self.task.hosts:
            if host.tunnel and host.name not in self._tunnels:
                self._tunnels[host.name] = HostTunnels(TunnelSpec.from_json(host.name, host.tunnel), self.state_dir / "tunnels")
        await asyncio.gather(*(t.ensure_agent() for t in self._tunnels.values()))

    def _reopen_tunnel(self, host: HostDef) -> None:
        tunnels = self._tunnels.get(host.name)
        if tunnels is not None:
            tunnels.agent_ready()  # re-opens a dropped forward in the background, on the same local port

    # -- status ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        retry = self.task.retry
        return {
            "name": self.task.name, "run_id": self.task.run_id, "state": self._state, "reason": self._reason,
            "nodes": self.task.nodes, "started_at": self._started_at, "finished_at": self._finished_at,
            "next_retry_at": self._next_retry_at, "max_duration": self.task.max_duration,
            "retry": None if retry is None else {"on_events": list(retry.on_events), "duration": retry.duration},
            "attempts": [a.to_json() for a in self._attempts],
        }

    def _save(self) -> None:
        snapshot = self.snapshot()
        write_status(self.state_dir, self._overlay(snapshot) if self._overlay is not None else snapshot)

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> str:
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        retry = self.task.retry
        backoff = Backoff(base=retry.base, cap=retry.cap, duration=retry.duration) if retry else None
        delay = 0.0
        try:
            await self._open_tunnels()
            while True:
                attempt = Attempt(number=len(self._attempts) + 1, started_at=time.time(), delay_before=delay)
                self._attempts.append(attempt)
                self._state, self._reason, self._next_retry_at = "running", "", None
                self._save()
                outcome = await self._run_attempt(attempt)
                attempt.outcome, attempt.finished_at = outcome, time.time()
                if outcome.result != "failed" or backoff is None or retry is None or outcome.event not in retry.on_events:
                    return self._finish(outcome.result, outcome.reason)
                next_delay = backoff.next_delay(attempt.number, self._attempts[0].started_at, time.time(), self._rng)
                if next_delay is None:
                    return self._finish("failed", f"{outcome.reason}; retry.duration {retry.duration:g} s is used up "
                                                  f"after {attempt.number} attempts")
                delay = next_delay
                self._state, self._reason, self._next_retry_at = "retrying", outcome.reason, time.time() + delay
                self._save()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return self._finish("stopped", "stopped while waiting to retry")
        finally:
            for client in self._clients.values():
                await client.close()
            for tunnels in self._tunnels.values():
                await tunnels.close()

    def _finish(self, state: str, reason: str) -> str:
        self._state, self._reason, self._finished_at, self._next_retry_at = state, reason, time.time(), None
        self._save()
        return state

    async def _place(self) -> list[Node] | str:
        """Nodes on distinct fitting hosts, or why there are not enough."""
        task = self.task
        facts = await asyncio.gather(*(self.client(h).host() for h in task.hosts), return_exceptions=True)
        chosen: list[Node] = []
        reasons: list[str] = []
        for host, got in zip(task.hosts, facts):
            if task.only_hosts and host.name not in task.only_hosts:
                reasons.append(f"{host.name}: not the host of the task's volumes ({', '.join(task.only_hosts)})")
                continue
            if isinstance(got, BaseException):
                reasons.append(f"{host.name}: unreachable")
                continue
            why = label_mismatch(task.placement, host.labels)
            if why is not None:
                reasons.append(f"{host.name}: {why}")
                continue
            if got.get("free_port"):
                self._free_ports[host.name] = int(got["free_port"])
            view = AgentView(name=host.name, host=HostFacts.from_json(got), labels=host.labels)
            reservation: Reservation | str = fit(task.resources, view, [])
            if isinstance(reservation, str):
                reasons.append(f"{host.name}: {reservation}")
                continue
            if len(chosen) < task.nodes:
                rank = len(chosen)
                run = f"r{self.run_number}-" if self.run_number else ""
                replica = f"task-{task.name}-{task.run_id[:8]}-{run}{len(self._attempts)}-{rank}"
                chosen.append(Node(rank=rank, host=host, replica=replica, gpus=reservation.gpus))
        if len(chosen) < task.nodes:
            return f"needs {task.nodes} hosts, {len(chosen)} fit" + (f" ({'; '.join(reasons)})" if reasons else "")
        return chosen

    async def _run_attempt(self, attempt: Attempt) -> Outcome:
        placed = await self._place()
        if isinstance(placed, str):
            return Outcome("failed", "no-capacity", placed)
        attempt.nodes = placed
        self._save()
        master_port = self.task.master_port or self._master_port(placed[0].host)
        envs = node_env(self.task, placed, master_port, attempt.number)
        started = await asyncio.gather(*(self._start(n, e) for n, e in zip(placed, envs)), return_exceptions=True)
        failed = [(n, r) for n, r in zip(placed, started) if isinstance(r, BaseException)]
        if failed:
            await self._stop_nodes(placed)
            node, exc = failed[0]
            event = "interruption" if isinstance(exc, RuntimeApiError) and not isinstance(exc, AgentApiError) else "error"
            return Outcome("failed", event, f"node {node.rank} on {node.host.name} did not start: {exc}")
        self._save()
        try:
            return await self._watch(attempt)
        finally:
            await self._stop_nodes(placed)
            # A follower ends when its replica is deleted; one whose host went silent is cut off.
            if self._followers:
                _, late = await asyncio.wait(self._followers, timeout=FOLLOW_GRACE)
                for task in late:
                    task.cancel()
                await asyncio.gather(*self._followers, return_exceptions=True)
            self._followers.clear()
            self._save()

    def _master_port(self, host: HostDef) -> int:
        """A port free on rank 0's host: this machine's own when that host is on loopback here, else the
        one its agent reported with its facts (29500, torchrun's default, from an agent too old to say)."""
        if host.ip.startswith("127.") and not host.tunnel:
            return _free_loopback_port()
        return self._free_ports.get(host.name) or 29500

    async def _start(self, node: Node, env: dict[str, str]) -> None:
        task = self.task
        # In a container the working directory is a path inside the image: only an absolute one means anything.
        workdir = task.remote_working_dir if node.host.tunnel or task.image else task.working_dir
        spec = {"id": node.replica, "service": task.name, "group": f"node-{node.rank}", "commands": list(task.commands),
                "env": env, "working_dir": workdir, "image": task.image, "gpus": list(node.gpus),
                "labels": {"task": task.name, "rank": str(node.rank)}, "restart": "never",
                "mounts": [{"source": m.source, "target": m.target, "name": m.name} for m in task.mounts],
                "container": _container(task)}
        answer = await self.client(node.host).start(spec)
        node.state, node.started_at = str(answer.get("state", "starting")), float(answer.get("started_at") or time.time())
        with open(node_log(self.state_dir, node.rank), "ab") as log:
            run = f"run {self.run_number}, " if self.run_number else ""
            log.write(f"--- {run}attempt {len(self._attempts)}, node {node.rank} on {node.host.name} ---\n".encode())
        self._followers.append(asyncio.create_task(self._follow(node)))

    async def _follow(self, node: Node) -> None:
        """Copy the node's log as it is written; ends when the runner deletes the node's replica."""
        with contextlib.suppress(RuntimeApiError, OSError), open(node_log(self.state_dir, node.rank), "ab") as log:
            async for chunk in self.client(node.host).follow_logs(node.replica, tail=100_000):
                log.write(chunk)
                log.flush()

    async def _watch(self, attempt: Attempt) -> Outcome:
        nodes = attempt.nodes
        deadline = attempt.started_at + self.task.max_duration if self.task.max_duration else None
        while True:
            if self._stop.is_set():
                return Outcome("stopped", None, "stopped by destroy or a new run")
            if deadline is not None and time.time() >= deadline:
                return Outcome("failed", None, f"max_duration {self.task.max_duration:g} s reached; stopped")
            await asyncio.gather(*(self._poll(n) for n in nodes if n.finished_at is None))
            self._save()
            for node in nodes:
                if node.state == "lost":
                    return Outcome("failed", "interruption", f"node {node.rank} on {node.host.name} was lost")
                if node.finished_at is not None and node.exit_code != 0:
                    return Outcome("failed", "error", f"node {node.rank} on {node.host.name} exited with code {node.exit_code}")
            if all(n.finished_at is not None for n in nodes):
                return Outcome("succeeded")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.task.poll)

    async def _poll(self, node: Node) -> None:
        try:
            replica = await self.client(node.host).get(node.replica)
        except RuntimeApiError:
            self._reopen_tunnel(node.host)
            node.unreachable_since = node.unreachable_since or time.time()
            if time.time() - node.unreachable_since > UNREACHABLE_AFTER:
                node.state = "lost"
            return
        node.unreachable_since = None
        if replica is None:
            node.state = "lost"
            return
        node.state = str(replica.get("state"))
        if replica.get("finished_at") is not None:
            node.exit_code = replica.get("exit_code")
            node.finished_at = float(replica["finished_at"])

    async def _stop_nodes(self, nodes: list[Node]) -> None:
        async def stop(node: Node) -> None:
            running = node.finished_at is None and node.state != "lost"
            try:
                answer = await self.client(node.host).stop(node.replica, grace=self.task.stop_grace)
            except RuntimeApiError:
                return
            if running and answer is not None:
                node.stopped, node.state = True, "stopped"
                node.exit_code, node.finished_at = answer.get("exit_code"), time.time()
        await asyncio.gather(*(stop(n) for n in nodes))
