"""Tasks, dev environments and volumes in `status`, `logs`, `up --wait` and `destroy`, and the
`ssh` command. They read what the stack's outputs point at (a task runner's status file and node
logs, a dev environment's status file and known_hosts entry), so none of them needs a gateway.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

import click
from rich.console import Console
from rich.table import Table

from gpustack_iac import workspace as ws
from gpustack_iac.commands.options import existing_stack_options
from gpustack_iac.engine.wire import unwrap_secret
from gpustack_iac.errors import GpustackError, RuntimeApiError
from gpustack_iac.runtime import sync_client as http
from gpustack_iac.runtime.tasks.status import FINAL_STATES, node_log, read_status
from gpustack_iac.runtime.tunnels import forwarded_agent_url

FOLLOW_POLL = 0.25


def _stamp(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def _utc(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def _schedule_state(status: dict[str, Any]) -> str:
    """A scheduled task's line: its cron, which run this is, the next run time, what was skipped."""
    schedule = status["schedule"]
    text = f"{status['state']}" + (f" (run {status['run']})" if status.get("run") and status["state"] != "scheduled" else "")
    text += f"; cron {' | '.join(schedule.get('cron') or [])}; next run {_utc(schedule.get('next_run_at'))}"
    if status.get("last_result"):
        text += f"; last run {status['last_result']}"
    if schedule.get("skipped_total"):
        text += f"; {schedule['skipped_total']} time(s) skipped (previous run still going)"
    return text


def _took(start: float | None, end: float | None) -> str:
    if not start:
        return "-"
    return f"{(end or time.time()) - start:.1f}s"


def tasks_of(outputs: dict[str, Any]) -> dict[str, str]:
    return dict(unwrap_secret(outputs.get("tasks")) or {})


def dev_environments_of(outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    devs = dict(unwrap_secret(outputs.get("dev_environments")) or {})
    # SSH fleet hosts' agents (a secret output apart): how `status` asks them about their dev environment.
    agents = dict(unwrap_secret(outputs.get("dev_environment_agents")) or {})
    return {name: {**info, "agents": agents} if agents else info for name, info in devs.items()}


def task_table(tasks: dict[str, str]) -> Table:
    table = Table(title="Tasks", title_justify="left")
    for col in ("task", "state", "attempt", "started", "node", "host", "exit", "time"):
        table.add_column(col)
    for name, state_dir in tasks.items():
        status = read_status(Path(state_dir))
        if status is None:
            table.add_row(name, "unknown (no status file)", *[""] * 8)
            continue
        state = _schedule_state(status) if status.get("schedule") else status["state"]
        if status["state"] == "retrying" and status.get("next_retry_at"):
            state += f" at {_stamp(status['next_retry_at'])}"
        if status.get("reason"):
            state += f": {status['reason']}"
        colour = {"succeeded": "green", "failed": "red"}.get(status["state"])
        shown_state = f"[{colour}]{state}[/]" if colour else state
        attempts = status.get("attempts") or [{}]
        for i, attempt in enumerate(attempts):
            nodes = attempt.get("nodes") or [{}]
            for j, node in enumerate(nodes):
                first = j == 0
                table.add_row(
                    name if i == 0 and first else "", shown_state if i == 0 and first else "",
                    (f"{attempt.get('number', '-')}" + (f" ({attempt['result']})" if attempt.get("result") else "")) if first else "",
                    _stamp(attempt.get("started_at")) if first else "",
                    str(node.get("rank", "-")), node.get("host", "-"),
                    (node.get("state", "-") if node.get("exit_code") is None else str(node["exit_code"]))
                    + (" (stopped)" if node.get("stopped") else ""),
                    _took(node.get("started_at"), node.get("finished_at")) if node else "-")
    return table


def dev_table(devs: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="Dev environments", title_justify="left")
    for col in ("dev environment", "state", "host", "ssh", "sessions", "ide"):
        table.add_column(col)
    for name, info in devs.items():
        status = _dev_status(name, info)
        state = status.get("state", "unknown")
        if status.get("reason"):
            state += f" ({status['reason']})"
        table.add_row(name, state, str(info.get("host")), f"gpustack-iac ssh {name}", str(status.get("sessions", "-")),
                      str(info.get("ide_link") or "-"))
    return table


def _dev_status(name: str, info: dict[str, Any]) -> dict[str, Any]:
    import json

    agent = (info.get("agents") or {}).get(info.get("host"))
    if agent:
        return _remote_dev_status(name, info, agent)
    try:
        return json.loads((Path(info["state_dir"]) / "status.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _remote_dev_status(name: str, info: dict[str, Any], agent: dict[str, Any]) -> dict[str, Any]:
    """A dev environment on an SSH fleet host, as its agent sees its replica (through SSH)."""
    replica = urllib.parse.quote(f"dev-{name}", safe="")
    with forwarded_agent_url(str(info["host"]), str(agent["url"]), agent.get("tunnel")) as url:
        if url is None:
            return {"state": "unknown", "reason": "its host cannot be reached over SSH"}
        try:
            got = http.call("GET", url, f"/v1/replicas/{replica}", str(agent["token"]))
            log = str(http.call("GET", url, f"/v1/replicas/{replica}/logs?tail=50", str(agent["token"])) or "")
        except RuntimeApiError as exc:
            return {"state": "unknown", "reason": str(exc)}
    if got.get("finished_at") is None:
        return {"state": str(got.get("state") or "running")}
    stopping = [line.split("stopping: ", 1)[1] for line in log.splitlines() if "stopping: " in line]
    return {"state": "stopped", "reason": stopping[-1] if stopping else f"exited {got.get('exit_code')}"}


def volume_table(volumes: dict[str, Any]) -> Table:
    table = Table(title="Volumes", title_justify="left")
    for col in ("volume", "host", "path", "on destroy"):
        table.add_column(col)
    for name, info in volumes.items():
        table.add_row(name, info.get("host", "-"), info.get("path", "-"), "deleted (auto_cleanup)" if info.get("auto_cleanup") else "kept")
    return table


def workloads_json(outputs: dict[str, Any]) -> dict[str, Any]:
    """What `status --format json` adds: each task's status file, each dev environment's status."""
    out: dict[str, Any] = {}
    if tasks := tasks_of(outputs):
        out["tasks"] = {name: read_status(Path(d)) for name, d in tasks.items()}
    if devs := dev_environments_of(outputs):
        # Agent tokens (SSH hosts' `agents`) are how `status` asks; they are not part of its answer.
        out["dev_environments"] = {name: {**{k: v for k, v in info.items() if k != "agents"}, "status": _dev_status(name, info)}
                                   for name, info in devs.items()}
    if volumes := unwrap_secret(outputs.get("volumes")):
        out["volumes"] = dict(volumes)
    return out


def print_workloads(outputs: dict[str, Any], console: Console) -> None:
    if tasks := tasks_of(outputs):
        console.print(task_table(tasks))
    if devs := dev_environments_of(outputs):
        console.print(dev_table(devs))
    if volumes := unwrap_secret(outputs.get("volumes")):
        console.print(volume_table(dict(volumes)))


def print_dev_hints(outputs: dict[str, Any], console: Console) -> None:
    for name, info in dev_environments_of(outputs).items():
        console.print(f"\nDev environment [bold]{name}[/] on {info.get('host')}:  gpustack-iac ssh {name}", highlight=False)
        if info.get("ide_link"):
            console.print(f"  Open in your IDE (after `gpustack-iac ssh {name} --write-config`): {info['ide_link']}",
                          highlight=False)


def wait_for_tasks(outputs: dict[str, Any], console: Console, timeout: float | None = None) -> bool:
    """Wait until every task of the stack ended; True when all succeeded."""
    tasks = tasks_of(outputs)
    deadline = None if timeout is None else time.monotonic() + timeout
    ended: dict[str, dict[str, Any]] = {}
    while len(ended) < len(tasks):
        for name, state_dir in tasks.items():
            status = read_status(Path(state_dir))
            if name not in ended and status is not None and status.get("schedule") and status["state"] == "scheduled":
                # A scheduled task never ends while deployed: waiting stops at its schedule.
                ended[name] = status
                console.print(f"task {name}: scheduled, next run {_utc(status['schedule'].get('next_run_at'))}", highlight=False)
            elif name not in ended and status is not None and status["state"] in FINAL_STATES:
                ended[name] = status
                took = _took(status.get("started_at"), status.get("finished_at"))
                console.print(f"task {name}: {status['state']} after {took}" + (f" ({status['reason']})" if status.get("reason") else ""),
                              highlight=False)
        if deadline is not None and time.monotonic() > deadline:
            raise GpustackError(f"tasks still running after {timeout:.0f} s: {', '.join(sorted(set(tasks) - set(ended)))}")
        if len(ended) < len(tasks):
            time.sleep(FOLLOW_POLL)
    return all(s["state"] in ("succeeded", "scheduled") for s in ended.values())


def print_task_logs(state_dir: str, node: int | None, tail: int, follow: bool) -> None:
    root = Path(state_dir)
    status = read_status(root) or {}
    ranks = [node] if node is not None else list(range(int(status.get("nodes") or 1)))
    for rank in ranks:
        path = node_log(root, rank)
        text = path.read_text(errors="replace") if path.exists() else ""
        lines = text.splitlines(keepends=True)[-tail:] if tail else []
        prefix = f"[node {rank}] " if len(ranks) > 1 else ""
        click.echo("".join(prefix + line for line in lines), nl=False)
    if not follow:
        return
    offsets = {r: node_log(root, r).stat().st_size if node_log(root, r).exists() else 0 for r in ranks}
    while True:
        # The runner has copied every node's last bytes before it writes a final state, so one more
        # read after seeing that state prints the end of every log.
        ended = (read_status(root) or {}).get("state") in FINAL_STATES
        for rank in ranks:
            path = node_log(root, rank)
            if path.exists() and path.stat().st_size > offsets[rank]:
                with open(path, "rb") as f:
                    f.seek(offsets[rank])
                    chunk = f.read()
                offsets[rank] += len(chunk)
                prefix = f"[node {rank}] " if len(ranks) > 1 else ""
                click.echo("".join(prefix + line for line in chunk.decode(errors="replace").splitlines(keepends=True)), nl=False)
        if ended:
            return
        time.sleep(FOLLOW_POLL)


def volume_notes(resources: Iterable[Any]) -> list[str]:
    """What a destroy does to each volume's data."""
    notes = []
    for res in resources:
        if res.type.endswith("workload:Volume"):
            inputs = res.inputs or {}
            fate = "deleted (auto_cleanup)" if inputs.get("auto_cleanup") else "kept (set auto_cleanup to delete it)"
            notes.append(f"volume {inputs.get('name')}: data at {inputs.get('host')}:{inputs.get('path')} is {fate}")
    return notes


def proxy_command(info: dict[str, Any]) -> str | None:
    """How to reach a dev environment on an SSH fleet host (its sshd listens on that host's
    loopback): through the fleet's own SSH, trusting only the host key verified at provisioning."""
    jump = info.get("jump")
    if not jump:
        return None
    argv = ["ssh", "-W", "%h:%p", "-p", str(jump["port"]), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={info['known_hosts']}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={jump['host_key_alias']}"]
    if jump.get("identity_file"):
        argv += ["-o", "IdentitiesOnly=yes", "-i", os.path.expanduser(str(jump["identity_file"]))]
    argv.append(f"{jump['user']}@{jump['hostname']}" if jump.get("user") else str(jump["hostname"]))
    return shlex.join(argv)


def ssh_config_entry(name: str, info: dict[str, Any]) -> str:
    proxy = proxy_command(info)
    return (f"Host {name}\n  HostName {info['address']}\n  Port {info['port']}\n  User {info['user']}\n"
            f"  IdentityFile {info['identity_file']}\n  IdentitiesOnly yes\n  UserKnownHostsFile {info['known_hosts']}\n"
            "  StrictHostKeyChecking yes\n" + (f"  ProxyCommand {proxy}\n" if proxy else ""))


def write_ssh_config(path: Path, name: str, info: dict[str, Any]) -> None:
    """Add or replace the `Host NAME` block in an OpenSSH client configuration."""
    begin, end = f"# gpustack-iac {name} begin\n", f"# gpustack-iac {name} end\n"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + rest.split(end, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(begin + ssh_config_entry(name, info) + end + text)
    os.chmod(path, 0o600)


@click.command()
@click.argument("name")
@click.argument("command", nargs=-1)
@existing_stack_options
@click.option("--write-config", "write_config", is_flag=True, help="Add a `Host NAME` entry to the SSH config instead of connecting.")
@click.option("--ssh-config", type=click.Path(dir_okay=False, path_type=Path), default=Path("~/.ssh/config"),
              show_default=True, help="The SSH client configuration --write-config edits.")
def ssh(name: str, command: tuple[str, ...], project: str | None, stack: str | None, state_dir: str | None, engine: str,
        write_config: bool, ssh_config: Path) -> None:
    """Open an SSH session in a dev environment (or run COMMAND there).

    \b
    Examples:
      gpustack-iac ssh workbench
      gpustack-iac ssh workbench -- nvidia-smi
      gpustack-iac ssh workbench --write-config   # then: ssh workbench, or the IDE link
    """
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    devs = dev_environments_of(space.engine().outputs())
    if name not in devs:
        raise GpustackError(f"no dev environment {name!r}; the stack has: {', '.join(sorted(devs)) or 'none'}")
    info = devs[name]
    if write_config:
        path = ssh_config.expanduser()
        write_ssh_config(path, name, info)
        click.echo(f"wrote Host {name} to {path}" + (f"; open {info['ide_link']}" if info.get("ide_link") else ""))
        return
    binary = shutil.which("ssh")
    if binary is None:
        raise GpustackError("no ssh client on PATH; install OpenSSH's client")
    argv = [binary, "-p", str(info["port"]), "-i", info["identity_file"], "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={info['known_hosts']}", "-o", "StrictHostKeyChecking=yes"]
    proxy = proxy_command(info)
    if proxy:
        argv += ["-o", f"ProxyCommand={proxy}"]
    argv += [f"{info['user']}@{info['address']}", *command]
    os.execv(binary, argv)
