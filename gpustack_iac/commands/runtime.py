"""`status` and `logs`: what the runtime is doing, asked of the stack's controller."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import click

from gpustack_iac.console import console as make_console
from rich.table import Table

from gpustack_iac import workspace as ws
from gpustack_iac.commands import workloads
from gpustack_iac.commands.options import existing_stack_options
from gpustack_iac.engine.wire import unwrap_secret
from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime import sync_client as http


def _outputs(project: str | None, stack: str | None, state_dir: str | None, engine: str) -> dict[str, Any]:
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    return space.engine().outputs()


def _controller(project: str | None, stack: str | None, state_dir: str | None, engine: str,
                outputs: dict[str, Any] | None = None) -> tuple[str, str]:
    space = ws.existing(project, stack, state_dir, engine)  # type: ignore[arg-type]
    outputs = outputs if outputs is not None else space.engine().outputs()
    control_url, admin = unwrap_secret(outputs.get("control_url")), unwrap_secret(outputs.get("admin_token"))
    if not control_url or not admin:
        # No stack outputs (an up stopped before recording them): a gateway in state still answers.
        store = space.store()
        for res in store.load().resources if store.exists() else []:
            if res.custom and res.type.endswith(":Gateway") and res.outputs.get("control_url"):
                control_url, admin = unwrap_secret(res.outputs["control_url"]), unwrap_secret(res.outputs.get("admin_token"))
                break
    if not control_url or not admin:
        raise GpustackError(f"stack {space.project}/{space.stack} has no gateway; nothing runs to report on")
    tunnel = unwrap_secret(outputs.get("control_tunnel"))
    if tunnel:
        # A gateway on a fleet host binds that host's loopback: an SSH forward for this command's life.
        from gpustack_iac.runtime.tunnels import TunnelSpec, forwarded  # noqa: PLC0415 - SSH gateways only

        control_url = click.get_current_context().with_resource(
            forwarded(TunnelSpec.from_json("gateway", dict(tunnel)), space.state_root / "tunnels"))
    return str(control_url), str(admin)


def _gib(value: Any) -> str:
    return f"{(value or 0) / 2**30:.1f}GiB"


@click.command()
@existing_stack_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json: the controller's answers (hosts, services, routers) and the tasks' status, for scripts.")
def status(project: str | None, stack: str | None, state_dir: str | None, engine: str, fmt: str) -> None:
    """Show hosts, services, replica groups and their replicas; tasks, dev environments and volumes.

    \b
    Examples:
      gpustack-iac status
      gpustack-iac status --format json | jq '.services[].groups[].ready'
    """
    outputs = _outputs(project, stack, state_dir, engine)
    console = make_console()
    has_workloads = any(outputs.get(k) for k in ("tasks", "dev_environments", "volumes"))
    if not outputs.get("control_url") and has_workloads:
        # No gateway (tasks and dev environments need none): only what the workloads' files say.
        if fmt == "json":
            click.echo(json.dumps(workloads.workloads_json(outputs), indent=2))
        else:
            workloads.print_workloads(outputs, console)
        return
    url, token = _controller(project, stack, state_dir, engine, outputs)
    try:
        agents = http.call("GET", url, "/control/agents", token)
        services = http.call("GET", url, "/control/services", token)
        routers = http.call("GET", url, "/control/routers", token)
    except GpustackError as exc:
        raise GpustackError(f"the gateway's controller does not answer ({exc}); run `gpustack-iac plan` to see what must be re-created") from exc
    if fmt == "json":
        click.echo(json.dumps({"hosts": agents, "services": services, "routers": routers, **workloads.workloads_json(outputs)},
                              indent=2))
        return
    hosts = Table(title="Hosts", title_justify="left")
    for col in ("host", "healthy", "cpus", "memory", "gpus", "labels"):
        hosts.add_column(col)
    for agent in agents:
        host = agent.get("host") or {}
        gpus = ", ".join(f"{g.get('name')}:{_gib(g.get('memory_bytes'))}" for g in host.get("gpus", [])) or "-"
        labels = " ".join(f"{k}={v}" for k, v in sorted((agent.get("labels") or {}).items()))
        hosts.add_row(agent["name"], "yes" if agent.get("healthy") else "[red]no[/]", str(host.get("cpus", "?")),
                      _gib(host.get("memory_bytes")), gpus, labels)
    console.print(hosts)
    table = Table(title="Services", title_justify="left")
    for col in ("service", "group", "ready/desired", "replica", "host", "state", "ready", "restarts"):
        table.add_column(col)
    for service in services:
        rollout = service.get("rollout") or {}
        for group in service.get("groups", []):
            replicas = group.get("replicas") or [{}]
            for i, replica in enumerate(replicas):
                first = i == 0
                table.add_row(service["name"] if first else "", group["name"] if first else "",
                              f"{group.get('ready', 0)}/{group.get('desired', 0)}" if first else "",
                              replica.get("id", "-"), replica.get("agent", "-"), replica.get("state", "-"),
                              "yes" if replica.get("ready") else "no" if replica else "-", str(replica.get("restarts", "")))
        line = f"{service['name']}: {service.get('endpoint', '')}"
        if rollout:
            line += f"  rollout {rollout.get('state')}: {rollout.get('message', '')}"
        table.caption = ((table.caption + "\n") if table.caption else "") + line
    console.print(table)
    for reason in not_ready_reasons(services):
        console.print(f"[yellow]not ready[/] {reason}", soft_wrap=True)
    if routers:
        console.print(_routers_table(routers))
    workloads.print_workloads(outputs, console)


def not_ready_reasons(services: list[dict[str, Any]]) -> list[str]:
    """One line per replica group below its desired count, saying why (the controller's reason first)."""
    lines = []
    for service in services:
        for group in service.get("groups", []):
            ready, desired = int(group.get("ready") or 0), int(group.get("desired") or 0)
            if ready >= desired:
                continue
            replicas = [r for r in group.get("replicas") or [] if r]
            if group.get("message"):
                why = str(group["message"]) + (f" ({group['capacity']})" if group.get("capacity") else "")
            elif group.get("no_capacity"):
                why = "no host with room for a replica of this group"
            elif int(group.get("crash_streak") or 0):
                why = f"replicas keep exiting ({group['crash_streak']} in a row)"
            elif replicas:
                states = ", ".join(sorted({str(r.get("state", "?")) for r in replicas}))
                why = f"{len(replicas)} replica(s) placed, waiting for their readiness probe ({states})"
            else:
                why = "no replica placed yet"
            lines.append(f"{service['name']}/{group['name']} {ready}/{desired}: {why}; "
                         f"see `gpustack-iac logs {service['name']} --group {group['name']}`")
    return lines


def _routers_table(routers: list[dict[str, Any]]) -> Table:
    table = Table(title="Routers", title_justify="left")
    for col in ("model", "strategy", "member", "ready", "requests", "errors", "in flight", "ttfb", "state"):
        table.add_column(col)
    for router in routers:
        for i, member in enumerate(router.get("members", [])):
            ttfb = member.get("ttfb_ewma_seconds")
            table.add_row(router["name"] if i == 0 else "", router.get("strategy", "") if i == 0 else "",
                          member["service"], str(member.get("ready", 0)), str(member.get("requests", 0)),
                          str(member.get("errors", 0)), str(member.get("in_flight", 0)),
                          f"{ttfb * 1000:.0f}ms" if ttfb is not None else "-",
                          "[yellow]cooling down[/]" if member.get("cooling_down") else "ok")
    return table


@click.command()
@click.argument("service")
@existing_stack_options
@click.option("--group", "-g", default=None, help="Only this replica group.")
@click.option("--replica", "-r", type=int, default=None, help="Only the replica with this number in its group.")
@click.option("--node", type=int, default=None, help="A task's node (its rank); default: every node.")
@click.option("--tail", "-n", type=int, default=200, show_default=True, help="Lines to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
def logs(service: str, project: str | None, stack: str | None, state_dir: str | None, engine: str, group: str | None,
         replica: int | None, node: int | None, tail: int, follow: bool) -> None:
    """Print a service's replica logs, or a task's node logs.

    \b
    Examples:
      gpustack-iac logs hello
      gpustack-iac logs hello --group burst -f
      gpustack-iac logs train --node 1 -f
    """
    outputs = _outputs(project, stack, state_dir, engine)
    tasks = workloads.tasks_of(outputs)
    if service in tasks:
        workloads.print_task_logs(tasks[service], node, tail, follow)
        return
    url, token = _controller(project, stack, state_dir, engine, outputs)
    _check_log_selection(url, token, service, group, replica)
    query = [f"tail={tail}"] + ([f"group={group}"] if group else []) + ([f"replica={replica}"] if replica is not None else [])
    if not follow:
        text = http.call("GET", url, f"/control/services/{service}/logs?{'&'.join(query)}", token) or ""
        click.echo(text if isinstance(text, str) else str(text), nl=False)
        return
    # The controller streams new lines of every matching replica as they are written.
    for chunk in http.stream(url, f"/control/services/{service}/logs?{'&'.join(query + ['follow=1'])}", token):
        click.echo(chunk.decode(errors="replace"), nl=False)


def _check_log_selection(url: str, token: str, service: str, group: str | None, replica: int | None) -> None:
    """An unknown service, group or replica number is an error naming the valid ones, not empty output."""
    try:
        info = http.call("GET", url, f"/control/services/{urllib.parse.quote(service, safe='')}", token)
    except http.NotFound:
        names = [s["name"] for s in http.call("GET", url, "/control/services", token)]
        raise GpustackError(f"no service {service!r}; the stack runs: {', '.join(names) or 'no services'}") from None
    groups = {g["name"]: g for g in info.get("groups", [])}
    if group is not None and group not in groups:
        raise GpustackError(f"service {service} has no group {group!r}; its groups: {', '.join(groups)}")
    if replica is not None:
        chosen = [groups[group]] if group is not None else list(groups.values())
        numbers = sorted({int(r["id"].rsplit("-", 1)[-1]) for g in chosen for r in g.get("replicas", [])
                          if r["id"].rsplit("-", 1)[-1].isdigit()})
        if replica not in numbers:
            where = f"group {group}" if group else f"service {service}"
            raise GpustackError(f"{where} has no replica {replica}; its replicas: {', '.join(map(str, numbers)) or 'none running'}")
