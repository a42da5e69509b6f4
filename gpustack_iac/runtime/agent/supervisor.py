"""Supervision of replicas: start each as its own process group, restart it on exit with
exponential back-off, stop it (SIGTERM, grace, SIGKILL), and re-adopt live replicas after the
agent itself restarts (their records on disk name pid and create_time).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from gpustack_iac.errors import AgentApiError, ReplicaSpecError
from gpustack_iac.runtime import envpolicy, procs
from gpustack_iac.runtime.agent import containers, engine, mounts, pgroup
from gpustack_iac.runtime.agent.spec import ReplicaSpec
from gpustack_iac.runtime.agent.store import ReplicaRecord, Store


@dataclass(frozen=True)
class SupervisorConfig:
    state_dir: Path
    advertise_host: str = "127.0.0.1"  # the host part of each replica's url
    gpus: frozenset[int] = frozenset()  # GPU indices present on this host
    docker: bool = False
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_reset_after: float = 60.0  # a replica that ran this long starts its back-off afresh
    running_after: float = 1.0  # "starting" becomes "running" once the process survived this long
    owned_poll: float = 0.2
    adopted_poll: float = 0.5
    log_rotate_bytes: int = 16 * 1024 * 1024


@dataclass
class _Runner:
    record: ReplicaRecord
    popen: subprocess.Popen[bytes] | None = None  # None for a replica adopted from a previous agent
    task: asyncio.Task[None] | None = None
    stopping: asyncio.Future[dict[str, Any]] | None = None


def backoff_delay(quick_crashes: int, base: float, cap: float) -> float:
    """0.5 s, 1 s, 2 s, ... capped: the delay before restart number `quick_crashes` in a row."""
    if quick_crashes <= 1:
        return base
    return float(min(base * (2 ** (quick_crashes - 1)), cap))


def _process_create_time(pid: int) -> float | None:
    # Unlike procs.create_time this accepts a zombie: a child that exited at once still has one.
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class Supervisor:
    def __init__(self, store: Store, config: SupervisorConfig) -> None:
        self._store = store
        self._config = config
        self._state_key = str(store.state_dir.resolve())
        self._runners: dict[str, _Runner] = {}

    # -- queries -------------------------------------------------------------------------

    def view(self, record: ReplicaRecord) -> dict[str, Any]:
        out = record.spec.to_json()
        out.update(
            port=record.port,
            pid=record.pid,
            state=record.state,
            exit_code=record.exit_code,
            restarts=record.restarts,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
            url=f"http://{self._config.advertise_host}:{record.port}",
        )
        return out

    def list(self) -> list[dict[str, Any]]:
        return [self.view(r.record) for r in sorted(self._runners.values(), key=lambda r: r.record.spec.id)]

    def get(self, replica_id: str) -> dict[str, Any]:
        return self.view(self._runner(replica_id).record)

    def log_path(self, replica_id: str) -> Path:
        """The replica's log, also after it was stopped (its last words explain a crash loop)."""
        path = self._store.log_path(replica_id)
        if replica_id not in self._runners and not path.exists():
            self._runner(replica_id)  # raises the agent's 404
        return path

    def has(self, replica_id: str) -> bool:
        return replica_id in self._runners

    def _runner(self, replica_id: str) -> _Runner:
        runner = self._runners.get(replica_id)
        if runner is None:
            raise AgentApiError(f"no replica {replica_id!r} on this agent", 404, "unknown_replica")
        return runner

    # -- lifecycle -----------------------------------------------------------------------

    async def resume(self) -> builtins.list[str]:  # `list` is a method of this class
        """Take over what a previous agent left: re-adopt live replicas, restart dead ones."""
        records, problems = self._store.load_all()
        for record in records:
            if record.stopping:
                await self._finish_interrupted_stop(record)
                continue
            runner = _Runner(record=record)
            self._runners[record.spec.id] = runner
            if record.finished_at is not None:
                continue  # a run-once replica that ended: kept for its exit code until deleted
            # Without a create_time a live pid proves nothing (after a reboot it may be anyone's).
            if record.create_time is not None and procs.is_alive(record.pid, record.create_time):
                self._append_log(record.spec.id, f"agent restarted; re-adopted pid {record.pid}")
                runner.task = asyncio.create_task(self._supervise(runner, running=True))
                continue
            # Dead, or never recorded (the agent died between spawn and save): make sure no copy
            # of it still runs before starting the one we supervise.
            await asyncio.to_thread(pgroup.kill_replica_orphans, record.spec.id, self._state_key)
            if record.pid is not None:
                record.restarts += 1
            self._append_log(record.spec.id, "agent restarted; replica was not running, starting it")
            running = await self._spawn(runner)
            runner.task = asyncio.create_task(self._supervise(runner, running=running))
        return problems

    async def create(self, spec: ReplicaSpec) -> tuple[dict[str, Any], bool]:
        """Start a replica; (replica, created). The same id with the same spec is idempotent."""
        existing = self._runners.get(spec.id)
        if existing is not None:
            if existing.record.spec == spec and existing.stopping is None:
                return self.view(existing.record), False
            raise AgentApiError(
                f"replica {spec.id!r} already exists with a different spec (or is stopping); delete it first",
                409,
                "replica_conflict",
            )
        self._check_honourable(spec)
        port = self._free_port() if spec.host_port is None else self._claim_port(spec.host_port)
        record = ReplicaRecord(spec=spec, port=port, container=spec.image is not None, started_at=time.time())
        runner = _Runner(record=record)
        self._runners[spec.id] = runner
        # Recorded before the process exists: a crash of the agent right after the spawn still
        # leaves a record, and the next agent finds the process by its environment.
        self._store.save(record)
        if record.container:
            # A pull may take many minutes (a CUDA image): answer now, state `pulling`, and start after it.
            record.state = "pulling"
            runner.task = asyncio.create_task(self._start_then_supervise(runner))
            return self.view(record), True
        running = await self._spawn(runner)
        if runner.stopping is None and record.error is None:
            runner.task = asyncio.create_task(self._supervise(runner, running=running))
        return self.view(record), True

    async def _start_then_supervise(self, runner: _Runner) -> None:
        running = await self._spawn(runner)
        if runner.stopping is None and runner.record.error is None:
            await self._supervise(runner, running=running)

    async def stop(self, replica_id: str, grace: float) -> dict[str, Any]:
        runner = self._runner(replica_id)
        if runner.stopping is not None:
            return await asyncio.shield(runner.stopping)
        runner.stopping = asyncio.get_running_loop().create_future()
        try:
            result = await self._stop(runner, grace)
        except BaseException as exc:
            failed, runner.stopping = runner.stopping, None  # a later DELETE may try again
            if isinstance(exc, asyncio.CancelledError):
                failed.cancel()
            else:
                failed.set_exception(exc)
                failed.exception()  # retrieved here, so an unawaited future never warns
            raise
        runner.stopping.set_result(result)
        return result

    async def close(self) -> None:
        """Stop supervising; the replicas keep running for the next agent to adopt."""
        tasks = [r.task for r in self._runners.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals -----------------------------------------------------------------------

    def _check_honourable(self, spec: ReplicaSpec) -> None:
        if spec.image is not None and not self._config.docker:
            raise ReplicaSpecError(
                f"image: {spec.image!r} needs Docker, and no Docker daemon answers on this host (`docker info` failed); "
                "run the replica with commands instead, or start Docker"
            )
        missing = [g for g in spec.gpus if g not in self._config.gpus]
        if missing:
            have = sorted(self._config.gpus)
            raise ReplicaSpecError(f"gpus: index {missing} not present on this host (GPUs present: {have or 'none'})")
        if spec.image is None and spec.working_dir and not Path(spec.working_dir).is_dir():
            raise ReplicaSpecError(f"working_dir: {spec.working_dir!r} is not a directory on this host")

    def _claim_port(self, port: int) -> int:
        """The port a replica's commands bind themselves: refused while another replica or process holds it."""
        holder = next((r.record.spec.id for r in self._runners.values() if r.record.port == port), None)
        if holder is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no holder
                try:
                    sock.bind((self._config.advertise_host, port))
                except OSError:
                    holder = "another process"
        if holder is not None:
            raise AgentApiError(f"port {port} is in use on this host ({holder}); the replica's commands bind it themselves",
                                409, "port_in_use")
        return port

    def _free_port(self) -> int:
        taken = {r.record.port for r in self._runners.values()}
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((self._config.advertise_host, 0))
                port = int(sock.getsockname()[1])
            if port not in taken:
                return port
        raise AgentApiError("no free port found for the replica", 503, "no_port")

    def _env(self, record: ReplicaRecord) -> tuple[dict[str, str], builtins.list[str]]:
        """The replica's environment, and the names a container should receive."""
        spec = record.spec
        own = dict(spec.env)
        own.update(
            PORT=str(record.port),
            GPUSTACK_PORT=str(record.port),
            # The address the replica's URL names (an SSH fleet host's private address when the
            # fleet has a `network`): a replica that listens there is reachable from other hosts.
            GPUSTACK_HOST=self._config.advertise_host,
            GPUSTACK_REPLICA_ID=spec.id,
            GPUSTACK_SERVICE=spec.service,
            GPUSTACK_GROUP=spec.group,
            # The interpreter running the agent: workloads that need our own helpers (a dev
            # environment's sshd wrapper) start them with it, on any host.
            GPUSTACK_PYTHON=sys.executable,
        )
        own.update(mounts.mount_env(spec, record.container))
        own.update(self._dstack_env(spec))
        # Only the base set of the agent's own environment: the operator's secrets are not the workload's.
        env = envpolicy.replica_env(os.environ)
        env.update(own)
        env[pgroup.AGENT_ENV] = self._state_key
        if spec.gpus and not record.container:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
        if record.container:
            # The client process needs to find the engine (DOCKER_HOST, ...); `-e` never passes these on.
            env.update(envpolicy.container_client_env(os.environ))
            env.pop("GPUSTACK_PYTHON", None)  # the agent's interpreter is not inside the image
            own.pop("GPUSTACK_PYTHON", None)
        return env, list(own)

    def _dstack_env(self, spec: ReplicaSpec) -> dict[str, str]:
        """dstack's run variables for a single-node run; a task runner sets its own (multi-node) values,
        and the controller the replica number, through the spec's env, which wins."""
        defaults = {"DSTACK_RUN_NAME": spec.service, "DSTACK_GPUS_NUM": str(len(spec.gpus)),
                    "DSTACK_GPUS_PER_NODE": str(len(spec.gpus)), "DSTACK_NODE_RANK": "0", "DSTACK_NODES_NUM": "1",
                    "DSTACK_MASTER_NODE_IP": self._config.advertise_host, "DSTACK_NODES_IPS": self._config.advertise_host}
        return {k: v for k, v in defaults.items() if k not in spec.env}

    def _append_log(self, replica_id: str, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with contextlib.suppress(OSError), open(self._store.log_path(replica_id), "ab") as f:
            f.write(f"[agent {stamp}Z] {line}\n".encode())

    def _rotate_log(self, replica_id: str) -> None:
        path = self._store.log_path(replica_id)
        with contextlib.suppress(OSError):
            if path.stat().st_size > self._config.log_rotate_bytes:
                os.replace(path, path.with_suffix(".log.1"))

    async def _spawn(self, runner: _Runner) -> bool:
        record = runner.record
        spec = record.spec
        env, own_names = self._env(record)
        if record.container:
            argv = await self._prepare_container(runner, env, own_names)
            if argv is None:
                return False
            cwd = None
        else:
            argv = ["/bin/sh", "-c", spec.shell_command]
            cwd = spec.working_dir
        self._rotate_log(spec.id)
        for note in await asyncio.to_thread(mounts.prepare, spec, record.container):
            self._append_log(spec.id, note)
        record.started_at = time.time()
        # exit_code keeps the previous run's code: a crash loop shows why it loops.
        try:
            with open(self._store.log_path(spec.id), "ab") as log:
                runner.popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
                )
        except OSError as exc:
            runner.popen = None
            record.pid = None
            record.create_time = None
            record.state = "failed"
            self._store.save(record)
            self._append_log(spec.id, f"cannot start the replica: {exc}")
            return False
        record.pid = runner.popen.pid
        record.create_time = _process_create_time(record.pid)
        record.state = "starting"
        self._store.save(record)
        return True

    async def _prepare_container(self, runner: _Runner, env: dict[str, str], own_names: list[str]) -> list[str] | None:
        """The `docker run` argv once the image is there; None when the replica must not start (a
        DELETE arrived, or the image cannot be pulled: a failure that restarting cannot fix)."""
        record, spec = runner.record, runner.record.spec
        client = engine.client_argv(env)
        # A container left by a killed docker client would hold the name and the port.
        await asyncio.to_thread(
            subprocess.run, [*client, "rm", "-f", containers.container_name(spec.id)], env=env, capture_output=True,
            timeout=60, check=False,
        )
        if runner.stopping is None:
            record.state = "pulling"
            error = await asyncio.to_thread(containers.ensure_image, client, spec, env, self._store.log_path(spec.id))
            if error is not None:
                record.state, record.error, record.finished_at = "failed", error, time.time()
                record.pid = record.create_time = None
                self._store.save(record)
                self._append_log(spec.id, error)
                return None
        if runner.stopping is not None:
            return None  # a DELETE arrived meanwhile: starting now would leave an orphan
        return containers.run_argv(client, spec, record.port, self._config.advertise_host, own_names)

    async def _wait_exit(self, runner: _Runner) -> int | None:
        """Wait for the replica's process to end; its exit code when it was our child."""
        record = runner.record
        pid = record.pid
        assert pid is not None
        popen = runner.popen
        while True:
            exited = pgroup.child_exited(pid) if popen is not None else not procs.is_alive(pid, record.create_time)
            if exited:
                break
            if record.state == "starting" and time.time() - record.started_at >= self._config.running_after:
                record.state = "running"
                self._store.save(record)
            await asyncio.sleep(self._config.owned_poll if popen is not None else self._config.adopted_poll)
        if popen is not None:
            # The unreaped leader still reserves the group id, so this reaches only its stragglers.
            pgroup.kill_group(pid)
            return popen.wait()
        if await asyncio.to_thread(pgroup.group_has_members, pid):
            pgroup.kill_group(pid)
        return None

    async def _supervise(self, runner: _Runner, running: bool) -> None:
        record = runner.record
        quick_crashes = 0
        while True:
            ran_for = 0.0
            if running:
                record.exit_code = await self._wait_exit(runner)
                ran_for = time.time() - record.started_at
            if running and self._finished(record):
                record.state = "exited"
                record.finished_at = time.time()
                record.pid = None
                record.create_time = None
                self._append_log(record.spec.id, f"replica exited (code {record.exit_code}) after {ran_for:.1f} s; "
                                                 f"restart policy {record.spec.restart}: not restarted")
                self._store.save(record)
                return
            quick_crashes = 0 if ran_for >= self._config.backoff_reset_after else quick_crashes + 1
            delay = backoff_delay(quick_crashes, self._config.backoff_base, self._config.backoff_cap)
            if running:
                record.state = "restarting"
                self._append_log(
                    record.spec.id, f"replica exited (code {record.exit_code}) after {ran_for:.1f} s; restarting in {delay:g} s"
                )
            record.pid = None
            record.create_time = None
            self._store.save(record)
            await asyncio.sleep(delay)
            record.restarts += 1
            running = await self._spawn(runner)
            if record.error is not None:
                return

    @staticmethod
    def _finished(record: ReplicaRecord) -> bool:
        """Whether a replica that just exited stays down (its restart policy says so)."""
        policy = record.spec.restart
        return policy == "never" or (policy == "on-failure" and record.exit_code == 0)

    async def _stop(self, runner: _Runner, grace: float) -> dict[str, Any]:
        record = runner.record
        if runner.task is not None:
            runner.task.cancel()
            await asyncio.gather(runner.task, return_exceptions=True)
        record.stopping = True
        self._store.save(record)
        await self._terminate(runner, grace)
        await asyncio.to_thread(pgroup.kill_replica_orphans, record.spec.id, self._state_key)
        await asyncio.to_thread(mounts.release, record.spec)
        if record.state != "exited":
            record.state = "stopped"
        record.pid = None
        record.create_time = None
        self._append_log(record.spec.id, "replica stopped")
        self._store.delete(record.spec.id)
        del self._runners[record.spec.id]
        return self.view(record)

    async def _terminate(self, runner: _Runner, grace: float) -> None:
        record = runner.record
        if record.container:
            await asyncio.to_thread(
                subprocess.run,
                [*engine.client_argv(os.environ), "stop", "-t", str(int(grace)), containers.container_name(record.spec.id)],
                capture_output=True,
                timeout=grace + 60,
                check=False,
            )
        pid = record.pid
        if pid is None:
            return
        popen = runner.popen
        if popen is not None:
            if not pgroup.child_exited(pid):
                pgroup.kill_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while not pgroup.child_exited(pid) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            pgroup.kill_group(pid, signal.SIGKILL)
            record.exit_code = await asyncio.to_thread(popen.wait)
            return
        await asyncio.to_thread(procs.stop_process, pid, record.create_time, grace, True)

    async def _finish_interrupted_stop(self, record: ReplicaRecord) -> None:
        if record.pid is not None:
            await asyncio.to_thread(procs.stop_process, record.pid, record.create_time, 5.0, True)
        await asyncio.to_thread(pgroup.kill_replica_orphans, record.spec.id, self._state_key)
        self._store.delete(record.spec.id)
