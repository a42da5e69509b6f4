"""Configuration → one Pulumi program.

The program is a plain function: either engine runs it (the embedded engine in-process, the
Automation API engine as an inline program). Everything a backend cannot do is rejected here,
before any engine runs, so `plan` fails exactly where `up` would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pulumi

from gpustack_iac import compile_workloads as workloads
from gpustack_iac import compile_code, support
from gpustack_iac.backends import (IMPLEMENTED_BACKENDS, ClusterBackend, Local, Ssh, WithPulumiPlugin, fleet_backend, get,
                                   workload_backends)
from gpustack_iac.cost import Cost, deployed_cost, fleet_cost, gateway_cost, group_costs
from gpustack_iac.errors import ConfigError, Diagnostic
from gpustack_iac.hostcheck import PlannedHost, local_hosts, planned_host, task_shortfall, unsatisfiable_groups
from gpustack_iac.runtime.agent.hostinfo import detect_docker
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import Document, FleetConfig, GatewayConfig, ServiceConfig
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import Fleet, local_host_names, probe_ssh_hosts
from gpustack_iac.stacks.gateway import Gateway, local_tls
from gpustack_iac.stacks.placement import NoOffer, fleet_groups, gateway_instance, vm_backend
from gpustack_iac.backends.cloud import GatewayInstance, Network, NodeGroup
from gpustack_iac.stacks.code import code_resources
from gpustack_iac.stacks.devenv import DevEnvironment
from gpustack_iac.stacks.router import Router
from gpustack_iac.stacks.service import Service
from gpustack_iac.stacks.task import Task
from gpustack_iac.stacks.volume import Volume


@dataclass
class CompiledStack:
    program: Callable[[], None]
    warnings: list[str] = field(default_factory=list)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # service name → runtime definition
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task name → runner definition
    # (kind, name) → the spec each component records in state; the plan summary compares them.
    # A function: the env fingerprints in them need the stack's key, read only when a plan is made.
    component_specs: Callable[[], dict[tuple[str, str], dict[str, Any]]] = dict
    cost: Cost = field(default_factory=Cost)
    plugin_backends: list[str] = field(default_factory=list)  # backends whose resources need a provider plugin

    def cost_of(self, deployed_specs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
        """The plan's `cost` object: this configuration's cost and its change against the component
        specs the state records (gpustack_iac/cost.py)."""
        return self.cost.to_json(deployed_cost(deployed_specs))
    hosts: list[str] = field(default_factory=list)  # SSH fleet hosts' facts, one line each, shown by plan


def _diag(doc: Document, path: str, message: str) -> Diagnostic:
    """A problem at the property `path` ("replica_groups[1].image", "backends") of `doc`."""
    source = doc.source
    if source is None:
        return Diagnostic(file="<config>", line=0, column=0, path=path, message=message)
    loc = [int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", path) if p]
    line, column = source.locate(loc)
    return Diagnostic(file=source.file, line=line, column=column, path=path, message=message)


def _check_backends(spec: Spec) -> list[Diagnostic]:
    problems = []
    for fleet in spec.fleets:
        backend = fleet_backend(fleet)
        if "," in backend and all(b in IMPLEMENTED_BACKENDS for b in backend.split(",")):
            problems.append(_diag(fleet, "backends", f"fleet {fleet.name}: name one backend per fleet "
                                                     f"(got {backend}); make one fleet per backend"))
        elif backend not in IMPLEMENTED_BACKENDS:
            problems.append(_diag(fleet, "backends" if not fleet.is_ssh else "ssh_config",
                                  f"fleet {fleet.name}: backend {backend} is not implemented yet "
                                  f"(implemented: {', '.join(IMPLEMENTED_BACKENDS)})"))
    for gateway in spec.gateways:
        backend = get(gateway.backend)
        if isinstance(backend, Ssh):
            problems += _check_ssh_gateway(gateway, spec)
        elif not backend.implemented:
            problems.append(_diag(gateway, "backend", f"gateway {gateway.name}: backend {gateway.backend} is not implemented yet "
                                                      f"(implemented: {', '.join(IMPLEMENTED_BACKENDS)})"))
        elif isinstance(backend, Local):
            problems += _check_local_gateway(gateway)
    problems += workloads.check_volumes(spec, _diag)
    for doc in (*spec.tasks, *spec.dev_environments):
        allowed = workload_backends(doc)
        if doc.backends and not set(doc.backends) & set(allowed):
            problems.append(_diag(doc, "backends", f"{doc.KIND} {doc.name}: backends {', '.join(doc.backends)} are not "
                                                   f"implemented yet for a {doc.KIND} (implemented: {', '.join(allowed)})"))
    return problems


def _support(doc: Document, backend: str, ctx: StackContext) -> list[Diagnostic]:
    """support.MATRIX's enforced rows: refusals become diagnostics, warnings the plan's warnings."""
    problems = []
    for finding in support.check(doc, backend):
        if finding.status == support.REFUSED:
            problems.append(_diag(doc, finding.path, finding.message))
        else:
            ctx.warn(finding.message)
    return problems


def _check_support(spec: Spec, ctx: StackContext) -> list[Diagnostic]:
    """Fleets, gateways and workloads against support.MATRIX (services: where their backend is known)."""
    problems = []
    for fleet in spec.fleets:
        problems += _support(fleet, fleet_backend(fleet), ctx)
    for gateway in spec.gateways:
        problems += _support(gateway, gateway.backend, ctx)
    workload_backend = "ssh" if spec.fleets and all(f.is_ssh for f in spec.fleets) else "local"
    for doc in (*spec.tasks, *spec.dev_environments):
        problems += _support(doc, workload_backend, ctx)
    return problems


def _check_ssh_gateway(gateway: GatewayConfig, spec: Spec) -> list[Diagnostic]:
    """A gateway on a fleet host: the host must be one of this stack's SSH fleet hosts; what the
    host-installed gateway does not do yet is refused rather than ignored."""
    hosts = [h.hostname for f in spec.fleets if f.ssh_config is not None for h in f.ssh_config.hosts]
    if gateway.host not in hosts:
        return [_diag(gateway, "host", f"gateway {gateway.name}: host {gateway.host!r} is not a host of an SSH fleet in this "
                                       f"stack (hosts: {', '.join(hosts) or 'none'})")]
    if gateway.replicas > 1:
        return [_diag(gateway, "replicas", f"gateway {gateway.name}: replicas {gateway.replicas}; a gateway on a fleet host is "
                                           "one process; set replicas: 1")]
    if gateway.certificate is not None and "certificate" in gateway.model_fields_set:
        return [_diag(gateway, "certificate", f"gateway {gateway.name}: TLS on a gateway on a fleet host is not implemented "
                                              "yet; set certificate: null (it binds the host's loopback, reached over SSH)")]
    return []


def _check_local_gateway(gateway: GatewayConfig) -> list[Diagnostic]:
    """What a local gateway cannot honour: refused at plan rather than silently served otherwise."""
    problems = []
    if gateway.replicas > 1:
        problems.append(_diag(gateway, "replicas", f"gateway {gateway.name}: replicas {gateway.replicas}, but the local backend "
                                                   "runs one gateway process per gateway; set replicas: 1"))
    if gateway.certificate is not None and local_tls(gateway) is None:
        # dstack uses the certificate for the gateway's domain; without a domain only an explicit one asks for TLS.
        # The local gateway serves TLS for a certificate the configuration names (local_tls); the model's
        # default lets-encrypt, or lets-encrypt without a domain, would still be plain HTTP.
        if gateway.domain or "certificate" in gateway.model_fields_set:
            need = ("needs a domain" if "certificate" in gateway.model_fields_set
                    else "is only the default here: name it (certificate: lets-encrypt, or self-signed) to serve TLS")
            problems.append(_diag(gateway, "certificate", f"gateway {gateway.name}: certificate {gateway.certificate.type} "
                                  f"{need}; without it the local gateway would serve plain HTTP. Set certificate: null "
                                  "to serve plain HTTP on 127.0.0.1"))
    return problems


def _check_https(service: ServiceConfig, gateway: GatewayConfig) -> list[Diagnostic]:
    """A service's `https` behind a local gateway: HTTPS asked for must not become plain HTTP."""
    if not isinstance(get(gateway.backend), Local) or not service.https or local_tls(gateway) is not None:
        return []
    # `https` (default true) applies behind a gateway with a domain; set explicitly, it always asks for HTTPS.
    if not gateway.domain and "https" not in service.model_fields_set:
        return []
    why = f"gateway {gateway.name} has domain {gateway.domain}" if gateway.domain else "https: true is set"
    return [_diag(service, "https", f"service {service.name}: {why}, but HTTPS would be served as plain HTTP: the local "
                                    f"gateway serves TLS only for a certificate it names; set https: false, or give gateway "
                                    f"{gateway.name} a certificate (lets-encrypt with its domain, self-signed or files)")]


def _check_service(service: ServiceConfig, ctx: StackContext, backend_name: str) -> list[Diagnostic]:
    backend = get(backend_name)
    if not isinstance(backend, Local):
        return _check_remote_service(service, backend_name)
    problems = []
    for i, group in enumerate(service.groups):
        at = f"replica_groups[{i}]" if service.replica_groups else ""
        # The agent runs an image only where a Docker daemon answers; say so now rather than at up.
        if group.image and not detect_docker():
            problems.append(_diag(service, f"{at}.image".lstrip("."), f"service {service.name}: image {group.image} needs Docker, "
                                  "and the local backend found no Docker daemon on this machine; remove image and run commands directly"))
        if group.backends and not any(get(b).implemented for b in group.backends):
            problems.append(_diag(service, f"{at}.backends".lstrip("."), f"service {service.name} group {group.name}: backends "
                                  f"{', '.join(group.backends)} are not implemented yet (implemented: {', '.join(IMPLEMENTED_BACKENDS)})"))
        for prop in backend.ignored_placement:
            if getattr(group, prop, None) not in (None, [], False):
                ctx.warn(f"service {service.name} group {group.name}: {prop} is ignored by the local backend")
    if service.gateway is False:
        problems.append(_diag(service, "gateway", f"service {service.name}: the local backend serves services through a "
                                                  "gateway; remove gateway: false"))
    if service.registry_auth:
        ctx.warn(f"service {service.name}: registry_auth is ignored without Docker")
    for prop, set_ in (("entrypoint", service.entrypoint is not None),
                       ("home_dir", service.home_dir != "/root"),
                       ("resources.shm_size", any(g.resources is not None and g.resources.shm_size is not None
                                                  for g in service.groups))):
        if set_:
            ctx.warn(f"service {service.name}: {prop} is ignored by the local backend")
    if service.model is not None and getattr(service.model, "format", "openai") == "tgi":
        ctx.warn(f"service {service.name}: model format tgi is served as OpenAI-compatible; chat_template and eos_token are ignored")
    return problems


def _check_remote_service(service: ServiceConfig, backend: str) -> list[Diagnostic]:
    problems = []
    if backend not in IMPLEMENTED_BACKENDS:
        return [_diag(service, "backends" if service.backends else "replica_groups", f"service {service.name}: backend "
                      f"{backend} is not implemented yet (implemented: {', '.join(IMPLEMENTED_BACKENDS)})")]
    for i, group in enumerate(service.groups):
        at = f"replica_groups[{i}]" if service.replica_groups else ""
        if not get(backend).runs_processes and not group.image:
            problems.append(_diag(service, f"{at}.image".lstrip(".") if at else "commands", f"service {service.name} group "
                                  f"{group.name}: a {backend} replica is a container; set image"))
        if group.backends and isinstance(get(backend), ClusterBackend) and set(group.backends) - {backend}:
            problems.append(_diag(service, f"{at}.backends".lstrip("."), f"service {service.name} group {group.name}: "
                                  f"runs behind a kubernetes gateway, so its backends must be [kubernetes]"))
    return problems


def _service_backend(service: ServiceConfig, gateway: GatewayConfig | None) -> str:
    for group in service.groups:
        if group.backends:
            return group.backends[0]
    return gateway.backend if gateway is not None else Local.name  # no gateway: refused below


def _default_hosts(spec: Spec, ctx: StackContext) -> list[PlannedHost]:
    """Local fleets' hosts, measured here (SSH fleets' hosts are probed by the caller). With any other
    fleet the facts of some hosts are not known here, and a group only they could run must not be
    refused: no check (empty list)."""
    if not all(get(fleet_backend(f)).hosts_known_at_plan for f in spec.fleets):
        return []
    return local_hosts([h for f in spec.fleets if not f.is_ssh for h in local_host_names(f)], ctx.state_root)


def _check_placement(service: ServiceConfig, definition: dict[str, Any], hosts: Sequence[PlannedHost]) -> list[Diagnostic]:
    """A group no host can take one replica of would wait for capacity forever: refuse it now."""
    problems = []
    for bad in unsatisfiable_groups(definition, hosts):
        group = service.groups[bad.group_index]
        at = f"replica_groups[{bad.group_index}].resources" if service.replica_groups else "resources"
        if group.resources is None:
            at = at.rsplit(".", 1)[0] if service.replica_groups else "type"
        problems.append(_diag(service, at, f"service {service.name} group {bad.group}: no host can run a replica: {bad.message}"))
    return problems


def _ssh_planned_hosts(spec: Spec) -> tuple[list[PlannedHost] | None, list[str]]:
    """SSH fleet hosts probed over SSH (nothing installed): their facts for placement, and one line each for the plan."""
    probed = probe_ssh_hosts(spec.fleets)
    lines = [h.summary() for h in probed]
    if any(h.facts is None for h in probed):
        return None, lines  # a host not reached might be the one a group needs: no verdict
    return [planned_host(h.name, h.facts or {}, h.labels) for h in probed], lines


def _pick_gateway(service: ServiceConfig, gateways: dict[str, GatewayConfig]) -> GatewayConfig | None:
    if isinstance(service.gateway, str):
        return gateways.get(service.gateway)
    return _default_gateway(gateways)


def _default_gateway(gateways: dict[str, GatewayConfig]) -> GatewayConfig | None:
    defaults = [g for g in gateways.values() if g.default]
    if defaults:
        return defaults[0]
    return next(iter(gateways.values())) if len(gateways) == 1 else None


def compile_spec(spec: Spec, ctx: StackContext, hosts: Sequence[PlannedHost] | None = None) -> CompiledStack:
    """Check what the backends can do and return the program; raises ConfigError with every problem.

    `hosts` are the facts of every host the stack's fleets will have, from whichever backend knows
    them; by default the local fleets' hosts, measured on this machine, and the SSH fleets' hosts,
    probed over SSH (an unreachable one is shown, and left out of the check).
    """
    problems = _check_backends(spec)
    problems += _check_support(spec, ctx)
    gateways = {str(g.name): g for g in spec.gateways}
    service_gateway: dict[str, str] = {}
    cost = Cost()
    node_groups: dict[str, list[NodeGroup]] = {}
    for fleet in spec.fleets:
        backend = fleet_backend(fleet)
        try:
            if vm_backend(backend) is not None:
                node_groups[str(fleet.name)] = [p.group for p in fleet_groups(fleet, backend)]
            if get(backend).implemented:
                cost.items.append(fleet_cost(fleet))
        except NoOffer as exc:
            problems.append(_diag(fleet, "resources", f"fleet {fleet.name}: {exc}"))
    instances: dict[str, GatewayInstance] = {}
    for gateway_config in spec.gateways:
        if vm_backend(gateway_config.backend) is not None:
            instances[str(gateway_config.name)] = gateway_instance(gateway_config)[0]
        if get(gateway_config.backend).implemented:
            cost.items.append(gateway_cost(gateway_config))
    fleet_backends = {fleet_backend(f) for f in spec.fleets}
    service_backend: dict[str, str] = {}
    for service in spec.services:
        gateway = _pick_gateway(service, gateways)
        backend = service_backend[str(service.name)] = _service_backend(service, gateway)
        problems += _check_service(service, ctx, backend)
        problems += _support(service, backend, ctx)
        try:
            cost.items += group_costs(service, backend, fleet_backends)
        except NoOffer as exc:
            problems.append(_diag(service, "resources", str(exc)))
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
    if problems:
        raise ConfigError(problems)

    definitions = {str(s.name): _definition(s, local=isinstance(get(service_backend[str(s.name)]), Local))
                   for s in spec.services}
    host_lines: list[str] = []
    for service in spec.services:
        mounts = workloads.resolve_mounts(service, f"service {service.name}", spec, ctx, _diag, problems)
        for group in definitions[str(service.name)]["groups"]:
            workloads.service_mounts(group, mounts)
    tasks = {str(t.name): workloads.task_definition(t, spec, ctx, _diag, problems) for t in spec.tasks}
    devs = {str(d.name): workloads.dev_environment_definition(d, spec, ctx, _diag, problems) for d in spec.dev_environments}
    archives = compile_code.ship(spec, definitions, tasks, devs, ctx, _diag, problems)
    if problems:
        raise ConfigError(problems)
    if hosts is None:
        hosts = _default_hosts(spec, ctx)
        if any(f.is_ssh for f in spec.fleets):
            ssh_planned, host_lines = _ssh_planned_hosts(spec)
            every_host_known = ssh_planned is not None and all(get(fleet_backend(f)).hosts_known_at_plan for f in spec.fleets)
            hosts = [*hosts, *(ssh_planned or [])] if every_host_known else []
    problems = [p for s in spec.services for p in _check_placement(s, definitions[str(s.name)], hosts)]
    for task in spec.tasks:
        # Tasks too: a node no host can run would wait for capacity after `up`, so refuse it now.
        short = task_shortfall(tasks[str(task.name)]["resources"], task.nodes, hosts)
        if short:
            problems.append(_diag(task, "resources", f"task {task.name}: no placement on the fleet's hosts: {short}"))
    if problems:
        raise ConfigError(problems)

    from gpustack_iac.backends.kubernetes.names import deployment_names

    scaled = {g: deployment_names([d for n, d in definitions.items() if service_gateway.get(n) == g])
              for g in gateways}

    def program() -> None:
        providers: dict[tuple[str, str | None], pulumi.ProviderResource | None] = {}

        def provider(backend: str, region: str | None) -> pulumi.ProviderResource | None:
            from gpustack_iac.stacks.cloud import explicit_provider

            if (backend, region) not in providers:
                providers[(backend, region)] = explicit_provider(backend, region, spec.project)
            return providers[(backend, region)]

        networks: dict[tuple[str, str], Any] = {}

        def shared(backend: str, region: str, opts: pulumi.ResourceOptions | None) -> Any:
            from gpustack_iac.stacks.cloud import CloudNetwork

            if (backend, region) not in networks:
                networks[(backend, region)] = CloudNetwork(backend, region, opts).handle
            return networks[(backend, region)]

        fleets = []
        for f in spec.fleets:
            groups = node_groups.get(str(f.name))
            opts, handle = None, None
            if groups:
                p = provider(fleet_backend(f), groups[0].region)
                opts = pulumi.ResourceOptions(providers=[p]) if p is not None else None
                handle = shared(fleet_backend(f), groups[0].region, opts)
            fleets.append(Fleet(f, ctx, opts, node_groups=groups, network=Network(tuple(f.ssh_from)), shared_network=handle))
        # Runs are created after the code they run from has landed.
        code = code_resources(archives, compile_code.code_root(ctx), fleets)
        volume_resources = _workloads(spec, ctx, fleets, tasks, devs, code)
        deployed: dict[str, Gateway] = {}
        registrations: dict[str, list[pulumi.Resource]] = {}
        for config in spec.gateways:
            opts, k8s, handle = None, None, None
            if vm_backend(config.backend) is not None:
                p = provider(config.backend, config.region)
                opts = pulumi.ResourceOptions(providers=[p]) if p is not None else None
                handle = shared(config.backend, str(config.region), opts)
            elif isinstance(get(config.backend), ClusterBackend):
                k8s = provider(config.backend, None)
            gateway = Gateway(config, ctx, opts, instance=instances.get(str(config.name)), network=Network(tuple(config.ssh_from)),
                              scaled=scaled[str(config.name)], k8s_provider=k8s, shared_network=handle,
                              node_groups=[g for f in spec.fleets if fleet_backend(f) == config.backend
                                           for g in node_groups.get(str(f.name)) or []],
                              join_secrets={str(f.name): fl.join_secret for f, fl in zip(spec.fleets, fleets)
                                            if fleet_backend(f) == config.backend and fl.join_secret is not None},
                              fleet_hosts=[h for fleet in fleets for h in fleet.hosts])
            deployed[str(config.name)] = gateway
            registrations[str(config.name)] = [gateway.register_host(h) for fleet in fleets for h in fleet.hosts]
        endpoints: dict[str, pulumi.Output[str]] = {}
        services: dict[str, Service] = {}
        for name, definition in definitions.items():
            gw_name = service_gateway[name]
            services[name] = Service(definition, deployed[gw_name], registrations[gw_name] + volume_resources, ctx)
            # From the gateway, not the registration: the outputs are then recorded as soon as the
            # gateway runs, even when a service fails to get ready (status, logs and output need them).
            endpoints[name] = deployed[gw_name].url.apply(lambda url, n=name: f"{url}/services/{n}")
        for router in spec.routers:
            members = [services[m.service] for m in router.members if m.service in services]
            Router(router, deployed[router_gateway[str(router.name)]], members)
        _export(deployed, endpoints, gateways)

    plugin_backends = sorted({fleet_backend(f) for f in spec.fleets if str(f.name) in node_groups}
                             | {g.backend for g in spec.gateways if isinstance(get(g.backend), WithPulumiPlugin)})
    for backend_name in plugin_backends:
        get(backend_name).resources()  # a missing provider SDK is one line naming the extra, before any engine runs
    return CompiledStack(program=program, warnings=list(ctx.warnings), definitions=definitions, tasks=tasks,
                         component_specs=lambda: _component_specs(spec, definitions, tasks, devs, ctx), cost=cost,
                         plugin_backends=plugin_backends, hosts=host_lines)


def compile_stack(spec: Spec, project: str, stack: str, state_root: Path, fingerprint_key: Callable[[], bytes]) -> CompiledStack:
    """`compile_spec` for a command: the stack's names, where local processes keep their files, and
    the key env fingerprints are made with (see StackContext)."""
    return compile_spec(spec, StackContext(project=project, stack=stack, state_root=state_root, fingerprint_key=fingerprint_key))


def _workloads(spec: Spec, ctx: StackContext, fleets: list[Fleet], tasks: dict[str, dict[str, Any]],
               devs: dict[str, dict[str, Any]], code: list[pulumi.Resource]) -> list[pulumi.Resource]:
    """Volumes, tasks and dev environments on the fleets' hosts, and their outputs; returns the
    volume and code resources (runs are created after the volumes they mount and their code)."""
    fleet_hosts = {h.name: h for fleet in fleets for h in fleet.hosts}
    volumes = [Volume(v, fleet_hosts[str(workloads.volume_host(v, spec))], workloads.volume_path(v, ctx, spec)) for v in spec.volumes]
    volume_resources: list[pulumi.Resource] = [v.resource for v in volumes] + code
    task_dirs = {name: Task(d, list(fleet_hosts.values()), ctx, volume_resources).state_dir for name, d in tasks.items()}
    dev_envs = {name: DevEnvironment(d, list(fleet_hosts.values()), ctx, volume_resources) for name, d in devs.items()}
    dev_outputs = {name: dev.outputs for name, dev in dev_envs.items()}
    dev_agents = {host: agent for dev in dev_envs.values() for host, agent in dev.agents.items()}
    if task_dirs:
        pulumi.export("tasks", task_dirs)
    if spec.volumes:
        pulumi.export("volumes", {str(v.name): {"host": str(workloads.volume_host(v, spec)), "path": workloads.volume_path(v, ctx, spec),
                                                "auto_cleanup": v.auto_cleanup} for v in spec.volumes})
    if dev_outputs:
        pulumi.export("dev_environments", dev_outputs)
    if dev_agents:
        pulumi.export("dev_environment_agents", pulumi.Output.secret(dev_agents))
    return volume_resources


def _component_specs(spec: Spec, definitions: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]],
                     devs: dict[str, dict[str, Any]], ctx: StackContext) -> dict[tuple[str, str], dict[str, Any]]:
    """The component specs `up` records, keyed like engine/summary.specs_from_resources."""
    specs: dict[tuple[str, str], dict[str, Any]] = {}
    for fleet in spec.fleets:
        specs[("fleet", str(fleet.name))] = Fleet.spec_of(fleet, ctx)
    for gateway in spec.gateways:
        specs[("gateway", str(gateway.name))] = Gateway.spec_of(gateway)
    for name, definition in definitions.items():
        specs[("service", name)] = Service.spec_of(definition, ctx)
    for router in spec.routers:
        specs[("router", str(router.name))] = Router.definition_of(router)
    for v in spec.volumes:
        specs[("volume", str(v.name))] = Volume.spec_of(v, str(workloads.volume_host(v, spec)), workloads.volume_path(v, ctx, spec))
    for name, definition in tasks.items():
        specs[("task", name)] = Task.spec_of(definition, ctx)
    for name, definition in devs.items():
        specs[("dev-environment", name)] = DevEnvironment.spec_of(definition, ctx)
    return specs


def _definition(service: ServiceConfig, local: bool = True) -> dict[str, Any]:
    definition = service.to_runtime()
    base = Path(service.source.file).parent if service.source else Path.cwd()
    for group in definition["groups"]:
        # A replica's process is its own "instance" here: setup runs before the commands, every start.
        group["commands"] = list(service.setup) + group["commands"]
        if not local:
            # A cloud node has no copy of this machine's directories: no path of the planning machine
            # goes into the definition (a `working_dir` is refused there, support.MATRIX).
            continue  # on a cloud, regions, instance types and the spot policy are what placement decides
        # Commands run from the configuration's directory, as they would from the repository in a container.
        group["working_dir"] = str((base / (group.get("working_dir") or ".")).resolve())
        # Warned about as ignored (see _LOCAL_IGNORED): the controller must not enforce them either,
        # or no local host would ever match `regions: [eu-west-1]`.
        placement = group.get("placement") or {}
        for key in ("regions", "instance_types"):
            placement[key] = []
        placement["spot_policy"] = placement["max_price"] = None
    return definition


def _export(deployed: dict[str, Gateway], endpoints: dict[str, pulumi.Output[str]], configs: dict[str, GatewayConfig]) -> None:
    if not deployed:
        return
    default = next((n for n, c in configs.items() if c.default), next(iter(deployed)))
    gateway = deployed[default]
    pulumi.export("gateway_url", gateway.url)
    pulumi.export("control_url", gateway.control_url)
    if gateway.control_tunnel is not None:
        # A gateway on a fleet host binds its loopback: status and logs reach it through this forward.
        pulumi.export("control_tunnel", gateway.control_tunnel)
    pulumi.export("token", pulumi.Output.secret(gateway.token))
    pulumi.export("admin_token", pulumi.Output.secret(gateway.admin_token))
    pulumi.export("endpoints", endpoints)
    if endpoints:
        pulumi.export("endpoint", next(iter(endpoints.values())))
