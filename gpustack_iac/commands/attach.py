"""`gpustack-iac attach TASK`: forward a running task's declared `ports` to localhost until Ctrl-C.

A node on this machine (the local backend) already listens here: a port kept as it is needs no
forward, a renamed one (`8080:80`) gets a loopback relay. A node on an SSH fleet host is reached
through `ssh -L` with the host key verified when the host was provisioned (runtime/tunnels.py),
never through the user's own known_hosts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Iterator

import click

from gpustack_iac import workspace as ws
from gpustack_iac.commands.options import existing_stack_options
from gpustack_iac.commands.workloads import tasks_of
from gpustack_iac.errors import GpustackError, RuntimeApiError
from gpustack_iac.runtime.tasks.status import read_status
from gpustack_iac.runtime.tunnels import TunnelSpec, forwarded

POLL = 0.5


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a node of the task runs: its host's entry in the task definition (name, url, tunnel)."""

    task: str
    rank: int
    host: dict[str, Any]
    ports: list[tuple[int, int]]  # (local, the run's)


def find_target(name: str, state_dir: Path, rank: int) -> Target:
    """The running node `rank` of task `name` and its declared ports, or one error saying why not."""
    try:
        definition = json.loads((state_dir / "task.json").read_text())
    except (OSError, ValueError):
        raise GpustackError(f"task {name} has no definition at {state_dir}; run `gpustack-iac up` first") from None
    ports = [(int(p["local"]), int(p["remote"])) for p in definition.get("ports") or []]
    if not ports:
        raise GpustackError(f"task {name} declares no ports; add `ports: [8080]` (or `8080:80`) to its configuration")
    status = read_status(state_dir) or {}
    attempts = status.get("attempts") or []
    nodes = attempts[-1].get("nodes", []) if attempts else []
    node = next((n for n in nodes if n.get("rank") == rank), None)
    if status.get("state") != "running" or node is None or node.get("finished_at") is not None:
        raise GpustackError(f"task {name} has no running node {rank} (state: {status.get('state', 'unknown')}); "
                            "attach forwards the ports of a running task")
    host = next((h for h in definition.get("hosts") or [] if h.get("name") == node.get("host")), None)
    if host is None:
        raise GpustackError(f"task {name}: node {rank}'s host {node.get('host')} is not in its definition")
    return Target(name, rank, host, ports)


def _relay(a: socket.socket, b: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := a.recv(65536):
            b.sendall(chunk)
    for s in (a, b):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


def _serve(listener: socket.socket, remote: tuple[str, int]) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # closed: attach is ending
        try:
            upstream = socket.create_connection(remote, timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_relay, args=(a, b), daemon=True).start()


@contextlib.contextmanager
def loopback_relay(local: int, remote: tuple[str, int]) -> Iterator[int]:
    """127.0.0.1:`local` relayed to `remote` for the length of the block."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", local))
    except OSError as exc:
        listener.close()
        raise GpustackError(f"local port {local} is taken ({exc.strerror}); free it or map the port (`{local + 1}:{remote[1]}`)") from None
    listener.listen(64)
    threading.Thread(target=_serve, args=(listener, remote), daemon=True).start()
    try:
        yield local
    finally:
        listener.close()


@contextlib.contextmanager
def forward_port(target: Target, local: int, remote: int, tmp: Path) -> Iterator[str]:
    """One declared port reachable on this machine: yields the local address."""
    tunnel = target.host.get("tunnel")
    if tunnel:
        spec = dataclasses.replace(TunnelSpec.from_json(str(target.host["name"]), tunnel), remote_port=remote)
        try:
            with forwarded(spec, tmp, local_port=local) as url:
                yield url.removeprefix("http://")
        except RuntimeApiError as exc:
            raise GpustackError(f"task {target.task}: port {remote} on {target.host['name']} not forwarded to "
                                f"localhost:{local}: {exc}") from None
        return
    address = str(target.host.get("address") or "127.0.0.1")
    if local == remote and address.startswith("127."):
        yield f"127.0.0.1:{remote}"  # the node runs on this machine and listens here already
        return
    with loopback_relay(local, (address, remote)):
        yield f"127.0.0.1:{local}"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command()
@click.argument("name")
@existing_stack_options
@click.option("--node", "rank", type=int, default=0, show_default=True, help="The node (rank) whose ports are forwarded.")
def attach(name: str, project: str | None, stack: str | None, state_dir: str | None, engine: str, rank: int) -> None:
    """Forward a running task's `ports` to localhost until Ctrl-C.

    \b
    Examples:
      gpustack-iac attach train
      gpustack-iac attach train --node 1
    """
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    tasks = tasks_of(space.engine().outputs())
    if name not in tasks:
        raise GpustackError(f"no task {name!r}; the stack has: {', '.join(sorted(tasks)) or 'no tasks'}")
    root = Path(tasks[name])
    target = find_target(name, root, rank)
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="gpustack-attach-") as tmp, contextlib.ExitStack() as held:
        # Ctrl-C is how attach ends, from the first forward on: one pressed as soon as the first
        # port is printed (it may already answer) ends it as cleanly as one pressed later (beside
        # two CPU hogs that came before the wait loop began, and attach exited 1).
        try:
            for local, remote in target.ports:
                address = held.enter_context(forward_port(target, local, remote, Path(tmp)))
                click.echo(f"task {name}: port {remote} on {target.host['name']} → http://{address}")
            click.echo("Forwarding; press Ctrl-C to stop.", err=True)
            while (read_status(root) or {}).get("state") == "running":
                time.sleep(POLL)
            click.echo(f"task {name} is no longer running; forwarding stopped", err=True)
        except KeyboardInterrupt:
            click.echo("forwarding stopped", err=True)
