"""The task definition a task runner is started with (the JSON shape is in docs/workloads.md).

Agent tokens are not part of it: they reach the runner through its environment only.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter
from pydantic import TypeAdapter, ValidationError

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime.controller.model import ContainerDef, MountDef, PlacementPolicy, Resources

RETRY_EVENTS = ("no-capacity", "interruption", "error")


class TaskDefinitionError(RuntimeApiError):
    """A task definition handed to the runner does not match the contract."""


@dataclass(frozen=True)
class HostDef:
    name: str
    url: str
    labels: dict[str, Any] = field(default_factory=dict)
    address: str | None = None  # the address other nodes reach this host at; default: the agent URL's host
    # SSH fleet hosts: the agent binds 127.0.0.1 there, so the runner reaches it through an SSH forward
    # (runtime/tunnels.py's TunnelSpec JSON: endpoint, key path, verified host key, the agent's port).
    tunnel: dict[str, Any] | None = None

    @property
    def ip(self) -> str:
        return self.address or urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"


@dataclass(frozen=True)
class RetryDef:
    on_events: tuple[str, ...] = RETRY_EVENTS
    duration: float | None = 86400.0
    base: float = 1.0  # the first retry's delay, doubled for each further retry
    cap: float = 300.0


@dataclass(frozen=True)
class ScheduleDef:
    crons: tuple[str, ...]  # croniter's numbering (weekdays from Sunday), UTC
    expressions: tuple[str, ...] = ()  # as the configuration wrote them (dstack's numbering), for status


@dataclass(frozen=True)
class TaskDef:
    name: str
    run_id: str  # changes with the task's spec: a new run id is a new run
    commands: tuple[str, ...]
    hosts: tuple[HostDef, ...]
    nodes: int = 1
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    remote_working_dir: str | None = None  # on hosts with a tunnel (SSH fleets), instead of working_dir
    image: str | None = None
    container: ContainerDef = field(default_factory=ContainerDef)
    resources: Resources = field(default_factory=Resources)
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    mounts: tuple[MountDef, ...] = ()
    only_hosts: tuple[str, ...] = ()  # a volume pins the task to its host
    retry: RetryDef | None = None
    max_duration: float | None = None
    master_port: int | None = None  # default: a free port when the master is on loopback, else 29500
    schedule: ScheduleDef | None = None  # a run at each cron time instead of one run now
    poll: float = 0.3
    stop_grace: float = 10.0


_ADAPTER: TypeAdapter[TaskDef] = TypeAdapter(TaskDef)


def parse_task(data: Any) -> TaskDef:
    try:
        task = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise TaskDefinitionError(f"invalid task definition: {problems}") from exc
    if task.nodes < 1:
        raise TaskDefinitionError("invalid task definition: nodes must be at least 1")
    if task.retry is not None and set(task.retry.on_events) - set(RETRY_EVENTS):
        raise TaskDefinitionError(f"invalid task definition: retry.on_events must be among {list(RETRY_EVENTS)}")
    if task.schedule is not None and (not task.schedule.crons or not all(croniter.is_valid(c) for c in task.schedule.crons)):
        raise TaskDefinitionError(f"invalid task definition: schedule.crons must be cron expressions, got {task.schedule.crons}")
    return task
