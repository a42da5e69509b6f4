"""Tasks, volumes and dev environments: their checks and runtime definitions for compile.py.

Volumes here are the local and SSH backends' host volumes: a directory on one fleet host. A run
that mounts one is pinned to that host (see docs/workloads.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpustack_iac.backends import HOST_VOLUME_BACKENDS
from gpustack_iac.errors import Diagnostic
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import DevEnvironmentConfig, Document, RunParams, TaskConfig, VolumeConfig
from gpustack_iac.spec.resources import ResourcesSpec
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import local_host_count, ssh_host_name

SSH_VOLUME_ROOT = "~/.gpustack-volumes"

Diag = Callable[[Document, str, str], Diagnostic]


@dataclass
class Mounts:
    mounts: list[dict[str, str]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # where the run must go (its volumes' host)


def host_names(spec: Spec) -> list[str]:
    """Every fleet host, named as the Fleet component names them."""
    out = []
    for fleet in spec.fleets:
        if fleet.ssh_config is not None:
            out += [ssh_host_name(str(fleet.name), h.hostname) for h in fleet.ssh_config.hosts]
        else:
            # Counted exactly as the Fleet component counts them (`nodes.target`, else the minimum, at
            # least one): `nodes: ..3` has no minimum, which used to raise a TypeError here.
            count = local_host_count(fleet) if fleet.nodes is not None else 0
            out += [f"{fleet.name}-{i}" for i in range(count)]
    return out


def _ssh_host_names(spec: Spec) -> dict[str, str]:
    """SSH fleet hosts: resource name → itself, and hostname → resource name (`host:` may give either)."""
    out: dict[str, str] = {}
    for fleet in spec.fleets:
        for h in fleet.ssh_config.hosts if fleet.ssh_config is not None else []:
            name = ssh_host_name(str(fleet.name), h.hostname)
            out[name] = out.setdefault(h.hostname, name)
    return out


def volume_host(volume: VolumeConfig, spec: Spec) -> str | None:
    if volume.host:
        return _ssh_host_names(spec).get(volume.host, volume.host)
    hosts = host_names(spec)
    return hosts[0] if hosts else None


def volume_path(volume: VolumeConfig, ctx: StackContext, spec: Spec) -> str:
    """Outside every agent's own directory: destroying a host must not take the data with it."""
    if volume_host(volume, spec) in _ssh_host_names(spec).values():
        # On the SSH host, in the agent user's home (the agent expands `~`): the install directory
        # goes when the host leaves the fleet, this one stays.
        return f"{SSH_VOLUME_ROOT}/{ctx.project}-{ctx.stack}-{volume.name}"
    return str(ctx.local_dir("volumes", str(volume.name)))


def check_volumes(spec: Spec, diag: Diag) -> list[Diagnostic]:
    problems = []
    hosts = host_names(spec)
    for volume in spec.volumes:
        if volume.backend not in HOST_VOLUME_BACKENDS:
            problems.append(diag(volume, "backend", f"volume {volume.name}: backend {volume.backend} is not implemented yet "
                                                    f"(implemented: {', '.join(HOST_VOLUME_BACKENDS)})"))
        elif volume.volume_id is not None:
            problems.append(diag(volume, "volume_id", f"volume {volume.name}: volume_id registers a cloud volume; "
                                                      "a host volume is created by name (remove volume_id, give size)"))
        host = volume_host(volume, spec)
        if host is None:
            problems.append(diag(volume, "backend", f"volume {volume.name}: no fleet host to put it on; add a fleet"))
        elif host not in hosts:
            problems.append(diag(volume, "host", f"volume {volume.name}: host {host} is not a fleet host "
                                                 f"(hosts: {', '.join(hosts) or 'none'})"))
    return problems


def resolve_mounts(run: RunParams, what: str, spec: Spec, ctx: StackContext, diag: Diag,
                   problems: list[Diagnostic]) -> Mounts:
    """The run's `volumes` as agent mounts, and the host its named volumes pin it to."""
    doc: Document = run  # type: ignore[assignment]
    volumes = {str(v.name): v for v in spec.volumes}
    out = Mounts()
    for i, mount in enumerate(run.volumes):
        if mount.instance_path is not None:
            out.mounts.append({"source": mount.instance_path, "target": mount.path, "name": ""})
            continue
        names = mount.name if isinstance(mount.name, list) else [mount.name]
        found = next((volumes[n] for n in names if n in volumes), None)
        if found is None:
            problems.append(diag(doc, f"volumes[{i}]", f"{what}: volume {' or '.join(str(n) for n in names)} is not configured "
                                                      "(add a type: volume document)"))
            continue
        host = volume_host(found, spec)
        out.mounts.append({"source": volume_path(found, ctx, spec), "target": mount.path, "name": str(found.name)})
        if host and host not in out.hosts:
            out.hosts.append(host)
    if len(out.hosts) > 1:
        problems.append(diag(doc, "volumes", f"{what}: its volumes live on different hosts ({', '.join(out.hosts)}); "
                                            "a run can use volumes of one host only"))
    return out


# Properties a process on a fleet host has nothing to do with: accepted, reported as ignored.
_IGNORED = ("regions", "instance_types", "spot_policy", "max_price", "python", "nvcc", "entrypoint", "registry_auth", "idle_duration", "creation_policy", "termination_policy",
            "termination_idle_time")


def _warn_ignored(run: RunParams, what: str, ctx: StackContext) -> None:
    for prop in _IGNORED:
        if run.image and prop in ("entrypoint", "registry_auth"):
            continue  # honoured in the container
        if getattr(run, prop, None) not in (None, [], False):
            ctx.warn(f"{what}: {prop} is ignored by the local backend")


def _placement(run: RunParams) -> dict[str, Any]:
    # Warned about as ignored: enforcing regions or instance types would match no local host.
    return {**run.placement(), "regions": [], "instance_types": [], "spot_policy": None, "max_price": None}


def _working_dir(run: RunParams) -> str:
    base = Path(run.source.file).parent if run.source else Path.cwd()  # type: ignore[attr-defined]
    return str((base / (run.working_dir or ".")).resolve())


def _remote_working_dir(run: RunParams) -> str | None:
    """The working directory on an SSH fleet host: the configuration's directory is on this machine,
    so only an absolute `working_dir` means anything there (else the agent's own directory)."""
    return run.working_dir if run.working_dir and run.working_dir.startswith("/") else None


def container_options(run: RunParams, resources: ResourcesSpec | None) -> dict[str, Any]:
    """An image run's container options (runtime/controller/model.py ContainerDef): the password
    travels in the definition, which the stack marks secret (stacks/service.py, stacks/task.py)."""
    auth = run.registry_auth
    shm = resources.shm_size if resources is not None else None
    return {"entrypoint": run.entrypoint, "user": run.user, "privileged": bool(run.privileged),
            "shm_size": shm.bytes if shm is not None else None,
            "registry_auth": {"username": auth.username, "password": auth.password} if auth is not None else None}


def _retry(run: RunParams) -> dict[str, Any] | None:
    if run.retry is not None:
        return {"on_events": list(run.retry.on_events), "duration": run.retry.duration}
    if run.retry_policy is not None and run.retry_policy.retry:
        return {"on_events": ["no-capacity", "interruption", "error"], "duration": run.retry_policy.duration}
    return None


def task_definition(task: TaskConfig, spec: Spec, ctx: StackContext, diag: Diag, problems: list[Diagnostic]) -> dict[str, Any]:
    """The runner's task definition (runtime/tasks/model.py), without hosts and tokens."""
    mounts = resolve_mounts(task, f"task {task.name}", spec, ctx, diag, problems)
    if mounts.hosts and task.nodes > 1:
        problems.append(diag(task, "volumes", f"task {task.name}: a host volume lives on one host, and nodes: {task.nodes} "
                                              "needs distinct hosts; use an instance volume (/host/path:/path) instead"))
    _warn_ignored(task, f"task {task.name}", ctx)
    if task.image:
        ctx.warn(f"task {task.name}: image needs Docker or Podman on the agents; without it the nodes fail to start")
    return {
        "name": str(task.name),
        "nodes": task.nodes,
        "commands": list(task.setup) + list(task.commands),
        **_on_hosts(task, mounts),
        "image": task.image,
        "container": container_options(task, task.resources) if task.image else {},
        "retry": _retry(task),
        "max_duration": task.max_duration,
        # Only when set: a key added to every definition would change every task's run id (a re-run).
        **_schedule_and_ports(task),
    }


def _schedule_and_ports(task: TaskConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if task.schedule is not None:
        # dstack's weekday numbering (from Monday) becomes croniter's here, once: the runner reads only croniter's.
        out["schedule"] = {"crons": task.schedule.posix(), "expressions": list(task.schedule.cron)}
    if task.ports:
        out["ports"] = [{"local": local, "remote": remote} for local, remote in task.port_pairs()]
    return out


def _on_hosts(config: TaskConfig | DevEnvironmentConfig, mounts: Mounts) -> dict[str, Any]:
    """What a task's nodes and a dev environment share in their definitions: where and how their
    processes run on fleet hosts."""
    return {
        "env": {k: v for k, v in config.env.items() if v is not None},
        "working_dir": _working_dir(config),
        "remote_working_dir": _remote_working_dir(config),
        "resources": config.resources.to_runtime(),
        "placement": _placement(config),
        "mounts": mounts.mounts,
        "only_hosts": mounts.hosts,
    }


def dev_environment_definition(dev: DevEnvironmentConfig, spec: Spec, ctx: StackContext, diag: Diag,
                               problems: list[Diagnostic]) -> dict[str, Any]:
    mounts = resolve_mounts(dev, f"dev environment {dev.name}", spec, ctx, diag, problems)
    _warn_ignored(dev, f"dev environment {dev.name}", ctx)
    if dev.version:
        ctx.warn(f"dev environment {dev.name}: version is ignored; the IDE installs its own server over SSH")
    if dev.image:
        problems.append(diag(dev, "image", f"dev environment {dev.name}: image is not supported on the local backend "
                                           "(the environment is a process group on the host); remove image"))
    return {
        "name": str(dev.name),
        "ide": dev.ide,
        "init": list(dev.setup) + list(dev.init),
        **_on_hosts(dev, mounts),
        "inactivity_duration": dev.inactivity_duration,
    }


def service_mounts(group: dict[str, Any], mounts: Mounts) -> None:
    """Add a service's mounts to one group of its runtime definition (a restart input, contract/restart.py)."""
    group["mounts"], group["hosts"] = mounts.mounts, mounts.hosts
