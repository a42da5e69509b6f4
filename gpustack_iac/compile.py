"""Configuration → one Pulumi program.

The program is a plain function: either engine runs it (the embedded engine in-process, the
Automation API engine as an inline program). Everything a backend cannot do is rejected here,
before any engine runs, so `plan` fails exactly where `up` would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pulumi

from gpustack_iac import compile_workloads as workloads
from gpustack_iac.errors import ConfigError, Diagnostic
from gpustack_iac.runtime.agent.hostinfo import detect_docker
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import Document, FleetConfig, GatewayConfig, ServiceConfig
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.devenv import DevEnvironment
from gpustack_iac.stacks.fleet import Fleet
from gpustack_iac.stacks.gateway import Gateway
from gpustack_iac.stacks.router import Router
from gpustack_iac.stacks.service import Service
from gpustack_iac.stacks.task import Task
from gpustack_iac.stacks.volume import Volume

# Backends with components in stacks/. Others plan nothing and are rejected with their name.
IMPLEMENTED_BACKENDS = ("local",)

# The local gateway serves plain HTTP: `certificate` and `https` that ask for TLS are refused at plan
# (never silently downgraded) until it serves TLS.
LOCAL_GATEWAY_SERVES_TLS = False

# Placement properties the local backend has nothing to decide with: accepted, reported as ignored.
_LOCAL_IGNORED = ("regions", "instance_types", "spot_policy", "max_price", "retry", "max_duration", "python", "nvcc",
                  "idle_duration", "creation_policy", "termination_policy", "termination_idle_time")


@dataclass
class CompiledStack:
    program: Callable[[], None]
    warnings: list[str] = field(default_factory=list)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # service name → runtime definition
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task name → runner definition
    # (kind, name) → the spec the volume, task and dev-environment components record (for the plan summary)
    workload_specs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _diag(doc: Document, path: str, message: str) -> Diagnostic:
    """A problem at the property `path` ("replica_groups[1].image", "backends") of `doc`."""
    source = doc.source
    if source is None:
        return Diagnostic(file="<config>", line=0, column=0, path=path, message=message)
    loc = [int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", path) if p]
    line, column = source.locate(loc)
    return Diagnostic(file=source.file, line=line, column=column, path=path, message=message)


def _fleet_backend(fleet: FleetConfig) -> str:
    if fleet.is_ssh:
        return "ssh"
    return ",".join(fleet.backends) if fleet.backends else "<any>"


def _check_backends(spec: Spec) -> list[Diagnostic]:
    problems = []
    for fleet in spec.fleets:
        backend = _fleet_backend(fleet)
        if backend not in IMPLEMENTED_BACKENDS:
            problems.append(_diag(fleet, "backends" if not fleet.is_ssh else "ssh_config",
                                  f"fleet {fleet.name}: backend {backend} is not implemented yet "
                                  f"(implemented: {', '.join(IMPLEMENTED_BACKENDS)})"))
    for gateway in spec.gateways:
        if gateway.backend not in IMPLEMENTED_BACKENDS:
            problems.append(_diag(gateway, "backend", f"gateway {gateway.name}: backend {gateway.backend} is not implemented yet "
                                                      f"(implemented: {', '.join(IMPLEMENTED_BACKENDS)})"))
        else:
            problems += _check_local_gateway(gateway)
    problems += workloads.check_volumes(spec, _diag)
    for doc in (*spec.tasks, *spec.dev_environments):
        if doc.backends and not set(doc.backends) & set(IMPLEMENTED_BACKENDS):
            problems.append(_diag(doc, "backends", f"{doc.KIND} {doc.name}: backends {', '.join(doc.backends)} are not "
                                                   f"implemented yet (implemented: {', '.join(IMPLEMENTED_BACKENDS)})"))
    return problems


def _check_local_gateway(gateway: GatewayConfig) -> list[Diagnostic]:
    """What a local gateway cannot honour: refused at plan rather than silently served otherwise."""
    problems = []
    if gateway.replicas > 1:
        problems.append(_diag(gateway, "replicas", f"gateway {gateway.name}: replicas {gateway.replicas}, but the local backend "
                                                   "runs one gateway process per gateway; set replicas: 1"))
    if not LOCAL_GATEWAY_SERVES_TLS and gateway.certificate is not None:
        # dstack uses the certificate for the gateway's domain; without a domain only an explicit one asks for TLS.
        if gateway.domain or "certificate" in gateway.model_fields_set:
            problems.append(_diag(gateway, "certificate", f"gateway {gateway.name}: certificate {gateway.certificate.type} would "
                                  "be served as plain HTTP: the local gateway does not serve TLS yet; set certificate: null "
                                  "to serve plain HTTP on 127.0.0.1"))
    return problems


def _check_https(service: ServiceConfig, gateway: GatewayConfig) -> list[Diagnostic]:
    """A service's `https` behind a local gateway: HTTPS asked for must not become plain HTTP."""
    if LOCAL_GATEWAY_SERVES_TLS or gateway.backend != "local" or not service.https:
        return []
    # `https` (default true) applies behind a gateway with a domain; set explicitly, it always asks for HTTPS.
    if not gateway.domain and "https" not in service.model_fields_set:
        return []
    why = f"gateway {gateway.name} has domain {gateway.domain}" if gateway.domain else "https: true is set"
    return [_diag(service, "https", f"service {service.name}: {why}, but HTTPS would be served as plain HTTP: the local "
                                    "gateway does not serve TLS yet; set https: false")]


def _check_service(service: ServiceConfig, ctx: StackContext) -> list[Diagnostic]:
    problems = []
    for i, group in enumerate(service.groups):
        at = f"replica_groups[{i}]" if service.replica_groups else ""
        # The agent runs an image only where a Docker daemon answers; say so now rather than at up.
        if group.image and not detect_docker():
            problems.append(_diag(service, f"{at}.image".lstrip("."), f"service {service.name}: image {group.image} needs Docker, "
                                  "and the local backend found no Docker daemon on this machine; remove image and run commands directly"))
        if group.backends and not set(group.backends) & set(IMPLEMENTED_BACKENDS):
            problems.append(_diag(service, f"{at}.backends".lstrip("."), f"service {service.name} group {group.name}: backends "
                                  f"{', '.join(group.backends)} are not implemented yet (implemented: {', '.join(IMPLEMENTED_BACKENDS)})"))
        for prop in _LOCAL_IGNORED:
            if getattr(group, prop, None) not in (None, [], False):
                ctx.warn(f"service {service.name} group {group.name}: {prop} is ignored by the local backend")
    if service.gateway is False:
        problems.append(_diag(service, "gateway", f"service {service.name}: the local backend serves services through a "
                                                  "gateway; remove gateway: false"))
    if service.registry_auth:
        ctx.warn(f"service {service.name}: registry_auth is ignored without Docker")
    for prop, set_ in (("entrypoint", service.entrypoint is not None), ("privileged", service.privileged),
                       ("home_dir", service.home_dir != "/root"), ("rate_limits", bool(service.rate_limits)),
                       ("resources.shm_size", any(g.resources is not None and g.resources.shm_size is not None
                                                  for g in service.groups))):
        if set_:
            ctx.warn(f"service {service.name}: {prop} is ignored by the local backend")
    if service.model is not None and getattr(service.model, "format", "openai") == "tgi":
        ctx.warn(f"service {service.name}: model format tgi is served as OpenAI-compatible; chat_template and eos_token are ignored")
    return problems


def _pick_gateway(service: ServiceConfig, gateways: dict[str, GatewayConfig]) -> GatewayConfig | None:
    if isinstance(service.gateway, str):
        return gateways.get(service.gateway)
    return _default_gateway(gateways)


def _default_gateway(gateways: dict[str, GatewayConfig]) -> GatewayConfig | None:
    defaults = [g for g in gateways.values() if g.default]
    if defaults:
        return defaults[0]
    return next(iter(gateways.values())) if len(gateways) == 1 else None


def compile_spec(spec: Spec, ctx: StackContext) -> CompiledStack:
    """Check what the backends can do and return the program; raises ConfigError with every problem."""
    problems = _check_backends(spec)
    gateways = {str(g.name): g for g in spec.gateways}
    service_gateway: dict[str, str] = {}
    for service in spec.services:
        problems += _check_service(service, ctx)
        gateway = _pick_gateway(service, gateways)
        if gateway is None:
            problems.append(_diag(service, "gateway", f"service {service.name}: no gateway to run behind; add a gateway "
                                                      "configuration (type: gateway, default: true)"))
        else:
            service_gateway[str(service.name)] = str(gateway.name)
            problems += _check_https(service, gateway)
    router_gateway: dict[str, str] = {}
    for router in spec.routers:
        chosen = gateways.get(router.gateway) if router.gateway else _default_gateway(gateways)
        if chosen is None:
            problems.append(_diag(router, "gateway", f"router {router.name}: no gateway to serve the alias {router.model} on"))
            continue
        router_gateway[str(router.name)] = str(chosen.name)
        for i, member in enumerate(router.members):
            if service_gateway.get(member.service) not in (None, str(chosen.name)):
                problems.append(_diag(router, f"members[{i}].service", f"router {router.name}: member {member.service} runs "
                                      f"behind gateway {service_gateway[member.service]}, the router behind {chosen.name}; "
                                      "a router routes within one gateway"))
    if (spec.services or spec.tasks or spec.dev_environments) and not spec.fleets:
        ctx.warn("no fleet: services have no hosts to run on; add a fleet (type: fleet, backends: [local], nodes: 1)")
    definitions = {}
    for service in spec.services:
        definition = _definition(service)
        mounts = workloads.resolve_mounts(service, f"service {service.name}", spec, ctx, _diag, problems)
        for group in definition["groups"]:
            workloads.service_mounts(group, mounts)
        definitions[str(service.name)] = definition
    tasks = {str(t.name): workloads.task_definition(t, spec, ctx, _diag, problems) for t in spec.tasks}
    devs = {str(d.name): workloads.dev_environment_definition(d, spec, ctx, _diag, problems) for d in spec.dev_environments}
    if problems:
        raise ConfigError(problems)

    def program() -> None:
        fleets = [Fleet(f, ctx) for f in spec.fleets]
        hosts = {h.name: h for fleet in fleets for h in fleet.hosts}
        volumes = {str(v.name): Volume(v, hosts[str(workloads.volume_host(v, spec))], workloads.volume_path(v, ctx))
                   for v in spec.volumes}
        volume_resources = [v.resource for v in volumes.values()]
        task_dirs = {name: Task(d, list(hosts.values()), ctx, volume_resources).state_dir for name, d in tasks.items()}
        dev_outputs = {name: DevEnvironment(d, list(hosts.values()), ctx, volume_resources).outputs for name, d in devs.items()}
        if task_dirs:
            pulumi.export("tasks", task_dirs)
        if volumes:
            pulumi.export("volumes", {n: {"host": str(workloads.volume_host(v, spec)), "path": workloads.volume_path(v, ctx),
                                          "auto_cleanup": v.auto_cleanup} for n, v in ((str(v.name), v) for v in spec.volumes)})
        if dev_outputs:
            pulumi.export("dev_environments", dev_outputs)
        deployed: dict[str, Gateway] = {}
        registrations: dict[str, list[pulumi.Resource]] = {}
        for config in spec.gateways:
            gateway = Gateway(config, ctx)
            deployed[str(config.name)] = gateway
            registrations[str(config.name)] = [gateway.register_host(h) for fleet in fleets for h in fleet.hosts]
        endpoints: dict[str, pulumi.Output[str]] = {}
        services: dict[str, Service] = {}
        for name, definition in definitions.items():
            gw_name = service_gateway[name]
            services[name] = Service(definition, deployed[gw_name], registrations[gw_name] + volume_resources, ctx)
            endpoints[name] = services[name].endpoint
        for router in spec.routers:
            members = [services[m.service] for m in router.members if m.service in services]
            Router(router, deployed[router_gateway[str(router.name)]], members)
        _export(deployed, endpoints, gateways)

    workload_specs: dict[tuple[str, str], dict[str, Any]] = {}
    for v in spec.volumes:
        workload_specs[("volume", str(v.name))] = Volume.spec_of(v, str(workloads.volume_host(v, spec)), workloads.volume_path(v, ctx))
    for name, definition in tasks.items():
        workload_specs[("task", name)] = Task.spec_of(definition, ctx)
    for name, definition in devs.items():
        workload_specs[("dev-environment", name)] = DevEnvironment.spec_of(definition, ctx)
    return CompiledStack(program=program, warnings=list(ctx.warnings), definitions=definitions, tasks=tasks,
                         workload_specs=workload_specs)


def _definition(service: ServiceConfig) -> dict[str, Any]:
    definition = service.to_runtime()
    base = Path(service.source.file).parent if service.source else Path.cwd()
    for group in definition["groups"]:
        # A replica's process is its own "instance" here: setup runs before the commands, every start.
        group["commands"] = list(service.setup) + group["commands"]
        # Commands run from the configuration's directory, as they would from the repository in a container.
        group["working_dir"] = str((base / (group.get("working_dir") or ".")).resolve())
    return definition


def _export(deployed: dict[str, Gateway], endpoints: dict[str, pulumi.Output[str]], configs: dict[str, GatewayConfig]) -> None:
    if not deployed:
        return
    default = next((n for n, c in configs.items() if c.default), next(iter(deployed)))
    gateway = deployed[default]
    pulumi.export("gateway_url", gateway.url)
    pulumi.export("control_url", gateway.control_url)
    pulumi.export("token", pulumi.Output.secret(gateway.token))
    pulumi.export("admin_token", pulumi.Output.secret(gateway.admin_token))
    pulumi.export("endpoints", endpoints)
    if endpoints:
        pulumi.export("endpoint", next(iter(endpoints.values())))
