"""Compile's second step: pure checks of the configuration against the facts, giving a typed plan.

The plan says what to build (each service's gateway and backend, each router's gateway, the VM
fleets' node groups, the cloud gateways' instances, the services' final runtime definitions, the
tasks' and dev environments' definitions) and what it costs; or the checks raise ConfigError with
every problem, naming file, line and property. Nothing here does I/O but ask `Facts`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from gpustack_iac import compile_code, support
from gpustack_iac import compile_workloads as workloads
from gpustack_iac.codebundle import Bundle
from gpustack_iac.backends import (IMPLEMENTED_BACKENDS, Backend, ClusterBackend, HostBackend, Local, Ssh, WithPulumiPlugin,
                                   fleet_backend, get, implemented, workload_backends)
from gpustack_iac.backends.kubernetes.image import ImageError
from gpustack_iac.backends.cloud import GatewayInstance, NodeGroup
from gpustack_iac.compile.facts import HAPROXY_MIN_VERSION, Facts
from gpustack_iac.compile.group_sizing import check_unsized, service_fleets
from gpustack_iac.contract.restart import stamp_generations
from gpustack_iac.cost import Cost, fleet_cost, gateway_cost, group_costs
from gpustack_iac.errors import ConfigError, Diagnostic, GpustackError
from gpustack_iac.hostcheck import PlannedHost, task_shortfall, unsatisfiable_groups
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import DevEnvironmentConfig, Document, FleetConfig, GatewayConfig, ServiceConfig, TaskConfig
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.gateway import local_tls
from gpustack_iac.stacks.placement import NoOffer, fleet_groups, gateway_instance, model_disk_gb, vm_backend

# A runtime definition in the wire shape of docs/runtime-api.md (what the controller parses).
Definition = dict[str, Any]

@dataclass
class StackPlan:
    """What the program builds, decided before any resource is declared."""

    gateways: dict[str, GatewayConfig]
    service_gateway: dict[str, str] = field(default_factory=dict)  # service → its gateway
    service_backend: dict[str, str] = field(default_factory=dict)  # service → the backend its replicas run on
    router_gateway: dict[str, str] = field(default_factory=dict)  # router → its gateway
    node_groups: dict[str, list[NodeGroup]] = field(default_factory=dict)  # VM fleet → its node groups
    instances: dict[str, GatewayInstance] = field(default_factory=dict)  # cloud gateway → its instance
    images: dict[str, str] = field(default_factory=dict)  # kubernetes gateway → its runtime image, pinned by digest
    cost: Cost = field(default_factory=Cost)
    definitions: dict[str, Definition] = field(default_factory=dict)  # service → final runtime definition
    tasks: dict[str, Definition] = field(default_factory=dict)  # task → runner definition
    devs: dict[str, Definition] = field(default_factory=dict)  # dev environment → its definition
    host_lines: list[str] = field(default_factory=list)  # SSH fleet hosts' facts, one line each
    plugin_backends: list[str] = field(default_factory=list)  # backends whose resources need a provider plugin
    code: dict[str, Bundle] = field(default_factory=dict)  # bundle key → the runs' code (`files:`, `repos:`) to ship


def check(spec: Spec, ctx: StackContext, facts: Facts) -> StackPlan:
    """The typed plan of `spec`, or ConfigError with every problem (placement last: hosts are
    measured or probed only for a configuration that passed every other check)."""
    plan = StackPlan(gateways={str(g.name): g for g in spec.gateways})
    problems = _check_backends(spec)
    problems += _check_support(spec, ctx)
    problems += _plan_fleets(spec, plan)
    problems += _plan_gateways(spec, facts, plan)
    problems += _plan_services(spec, ctx, facts, plan)
    _size_model_disks(spec, plan, ctx)
    problems += _plan_routers(spec, plan)
    problems += [p for s in spec.services for p in _check_served(s, spec.fleets, plan.service_backend[str(s.name)], ctx.warn)]
    cloud_gateways = [(plan.gateways[n].backend, i.region) for n, i in plan.instances.items()]
    problems += check_unsized(spec.fleets, spec.services, plan.node_groups, cloud_gateways, plan.service_backend, ctx.warn,
                              _diag)
    if (spec.tasks or spec.dev_environments) and not spec.fleets:
        ctx.warn("no fleet: tasks and dev environments have no hosts to run on; add a fleet (type: fleet, backends: [local], nodes: 1)")
    if problems:
        raise ConfigError(problems)
    problems += _attach_runtimes(spec, facts, plan)
    problems += _plan_definitions(spec, ctx, facts, plan)
    if problems:
        raise ConfigError(problems)
    host_facts = facts.hosts()
    plan.host_lines = [*host_facts.lines, *plan.host_lines]  # the gateways' data-plane lines after the hosts'
    problems = [p for s in spec.services for p in _check_placement(s, plan.definitions[str(s.name)], host_facts.hosts)]
    for task in spec.tasks:
        # Tasks too: a node no host can run would wait for capacity after `up`, so refuse it now.
        short = task_shortfall(plan.tasks[str(task.name)]["resources"], task.nodes, host_facts.hosts)
        if short:
            problems.append(_diag(task, "resources", f"task {task.name}: no placement on the fleet's hosts: {short}"))
    if problems:
        raise ConfigError(problems)
    plan.plugin_backends = sorted({fleet_backend(f) for f in spec.fleets if str(f.name) in plan.node_groups}
                                  | {g.backend for g in spec.gateways if isinstance(get(g.backend), WithPulumiPlugin)})
    return plan


def _check_served(service: ServiceConfig, fleets: Sequence[FleetConfig], backend: str,
                  warn: Callable[[str], None]) -> list[Diagnostic]:
    """A group no fleet can give a host to would wait for capacity until `up` times out: refuse it at plan.
    Host replicas (local, ssh) run on any host fleet's agents; cloud replicas only on nodes of a fleet
    of their backend (warned about); a cluster schedules its own pods. Fleets in any document of the stack count."""
    named = set(service.fleets or ())
    candidates = service_fleets(service, fleets)
    have = {fleet_backend(f) for f in candidates}
    problems = []
    for i, group in enumerate(service.groups):
        backends = list(group.backends or [backend])
        if any(isinstance(get(b), ClusterBackend) for b in backends):
            continue
        on_hosts = all(isinstance(get(b), HostBackend) for b in backends)
        if set(backends) & have or (on_hosts and any(isinstance(get(b), HostBackend) for b in have)):
            continue
        where = f"fleets {', '.join(sorted(named))}" if named else "the stack's fleets"
        if not on_hosts:
            # Cloud groups are costed as instances of their own; whether up sizes nodes for them
            # without a fleet is not checked here yet, so this stays a warning.
            warn(f"service {service.name} group {group.name}: no {'/'.join(backends)} fleet ({where}: "
                 f"{', '.join(sorted(have)) or 'none'}); add one (type: fleet, backends: [{backends[0]}]) for its nodes")
            continue
        at = f"replica_groups[{i}]" if service.replica_groups else "type"
        problems.append(_diag(service, at, f"service {service.name} group {group.name}: no fleet can serve it "
                              f"({where}: {', '.join(sorted(have)) or 'none'}); its replicas would wait for a host "
                              f"forever. Add a fleet (type: fleet, backends: [{backends[0]}]) in any configuration "
                              f"of the stack"))
    return problems


def _plan_fleets(spec: Spec, plan: StackPlan) -> list[Diagnostic]:
    problems = []
    for fleet in spec.fleets:
        backend = fleet_backend(fleet)
        try:
            if vm_backend(backend) is not None:
                plan.node_groups[str(fleet.name)] = [p.group for p in fleet_groups(fleet, backend)]
            if get(backend).implemented:
                plan.cost.items.append(fleet_cost(fleet))
        except NoOffer as exc:
            problems.append(_diag(fleet, "resources", f"fleet {fleet.name}: {exc}"))
    return problems


def _plan_gateways(spec: Spec, facts: Facts, plan: StackPlan) -> list[Diagnostic]:
    problems = []
    for gateway in spec.gateways:
        try:
            if vm_backend(gateway.backend) is not None:
                plan.instances[str(gateway.name)] = gateway_instance(gateway)[0]
            if isinstance(get(gateway.backend), ClusterBackend):
                plan.images[str(gateway.name)] = facts.runtime_image()
        except NoOffer as exc:
            problems.append(_diag(gateway, "region", str(exc)))
        except ImageError as exc:
            problems.append(_diag(gateway, "backend", f"gateway {gateway.name}: {exc}"))
        if get(gateway.backend).implemented:
            plan.cost.items.append(gateway_cost(gateway))
        problems += _plan_data_plane(gateway, facts, plan)
    return problems


def _plan_data_plane(gateway: GatewayConfig, facts: Facts, plan: StackPlan) -> list[Diagnostic]:
    """One plan line per local gateway that asks for HAProxy: what it gets; `haproxy` without a usable
    HAProxy here is refused (other backends refuse `data_plane` through support.MATRIX)."""
    if gateway.backend != Local.name or gateway.data_plane == "python":
        return []
    version = facts.haproxy()
    if version is not None and version >= HAPROXY_MIN_VERSION:
        plan.host_lines.append(f"gateway {gateway.name}: data plane HAProxy {version[0]}.{version[1]} "
                               f"(data_plane: {gateway.data_plane}), the Python gateway behind it")
        return []
    found = "no haproxy on PATH" if version is None else f"haproxy {version[0]}.{version[1]} is older than 2.6"
    if gateway.data_plane == "haproxy":
        return [_diag(gateway, "data_plane", f"gateway {gateway.name}: data_plane haproxy needs HAProxy 2.6 or later on this "
                                             f"machine ({found}); install it (apt-get install haproxy) or use auto/python")]
    plan.host_lines.append(f"gateway {gateway.name}: data plane python (data_plane: auto falls back: {found})")
    return []


def _attach_runtimes(spec: Spec, facts: Facts, plan: StackPlan) -> list[Diagnostic]:
    """Every cloud node group and gateway gets the pinned runtime it boots from (built, or read from
    the cache, only for a configuration that passed the other checks: building downloads wheels)."""
    problems = []
    for fleet in spec.fleets:
        name, backend = str(fleet.name), fleet_backend(fleet)
        if name not in plan.node_groups:
            continue
        try:
            plan.node_groups[name] = [dataclasses.replace(g, runtime=facts.cloud_runtime(backend, g.arch, gateway=False))
                                      for g in plan.node_groups[name]]
        except GpustackError as exc:
            problems.append(_diag(fleet, "backends", f"fleet {name}: {exc}"))
    for name, instance in plan.instances.items():
        gateway = plan.gateways[name]
        try:
            plan.instances[name] = dataclasses.replace(
                instance, runtime=facts.cloud_runtime(gateway.backend, instance.arch, gateway=True))
        except GpustackError as exc:
            problems.append(_diag(gateway, "backend", f"gateway {name}: {exc}"))
    return problems


def _size_model_disks(spec: Spec, plan: StackPlan, ctx: StackContext) -> None:
    """Cloud nodes' boot disks hold the models their services serve: the default disk grows to fit
    ("70B" → about 220 GB); a `disk:` the fleet names is kept, with a warning when it is too small."""
    for fleet in spec.fleets:
        groups = plan.node_groups.get(str(fleet.name))
        if not groups:
            continue
        needs = [(str(s.name), gb) for s in spec.services if s.model is not None
                 and plan.service_backend.get(str(s.name)) == fleet_backend(fleet) for gb in [model_disk_gb(s.model.name)] if gb]
        if not needs:
            continue
        service, needed = max(needs, key=lambda n: n[1])
        if fleet.resources is not None and "disk" in fleet.resources.model_fields_set:
            if groups[0].disk_gb < needed:
                ctx.warn(f"fleet {fleet.name}: disk {groups[0].disk_gb}GB may not hold service {service}'s model "
                         f"(about {needed}GB with the image); raise resources.disk")
            continue
        plan.node_groups[str(fleet.name)] = [dataclasses.replace(g, disk_gb=max(g.disk_gb, needed)) for g in groups]


def _plan_services(spec: Spec, ctx: StackContext, facts: Facts, plan: StackPlan) -> list[Diagnostic]:
    problems = []
    fleet_backends = {fleet_backend(f) for f in spec.fleets}
    for service in spec.services:
        gateway = _pick_gateway(service, plan.gateways)
        backend = plan.service_backend[str(service.name)] = _service_backend(service, gateway)
        problems += _check_service(service, ctx, facts, backend)
        problems += _support(service, backend, ctx)
        try:
            plan.cost.items += group_costs(service, backend, fleet_backends)
        except NoOffer as exc:
            problems.append(_diag(service, "resources", str(exc)))
        if gateway is None:
            problems.append(_diag(service, "gateway", f"service {service.name}: no gateway to run behind; add a gateway "
                                                      "configuration (type: gateway, default: true)"))
        else:
            plan.service_gateway[str(service.name)] = str(gateway.name)
            problems += _check_https(service, gateway)
    return problems


def _plan_routers(spec: Spec, plan: StackPlan) -> list[Diagnostic]:
    problems = []
    for router in spec.routers:
        chosen = plan.gateways.get(router.gateway) if router.gateway else _default_gateway(plan.gateways)
        if chosen is None:
            problems.append(_diag(router, "gateway", f"router {router.name}: no gateway to serve the alias {router.model} on"))
            continue
        plan.router_gateway[str(router.name)] = str(chosen.name)
        for i, member in enumerate(router.members):
            if plan.service_gateway.get(member.service) not in (None, str(chosen.name)):
                problems.append(_diag(router, f"members[{i}].service", f"router {router.name}: member {member.service} runs "
                                      f"behind gateway {plan.service_gateway[member.service]}, the router behind {chosen.name}; "
                                      "a router routes within one gateway"))
    return problems


def _plan_definitions(spec: Spec, ctx: StackContext, facts: Facts, plan: StackPlan) -> list[Diagnostic]:
    """The services' final runtime definitions (generations stamped), the tasks' and dev environments'."""
    problems: list[Diagnostic] = []
    definitions = {}
    for service in spec.services:
        definition = _definition(service, ctx, local=isinstance(get(plan.service_backend[str(service.name)]), Local))
        mounts = workloads.resolve_mounts(service, f"service {service.name}", spec, ctx, _diag, problems)
        for group in definition["groups"]:
            workloads.service_mounts(group, mounts)
        definitions[str(service.name)] = definition
    plan.tasks = {str(t.name): workloads.task_definition(t, spec, ctx, _diag, problems) for t in spec.tasks}
    plan.devs = {str(d.name): workloads.dev_environment_definition(d, spec, ctx, _diag, problems) for d in spec.dev_environments}
    # Runs that ship code run where it lands (their working_dir), so new code is a new generation.
    plan.code = compile_code.ship(spec, definitions, plan.tasks, plan.devs, ctx, facts.code_bundle, _diag, problems)
    for name, definition in definitions.items():
        # The definition is final now: its groups' generations come from what it will run.
        plan.definitions[name] = stamp_generations(definition)
    return problems


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
        else:
            problems += _check_fleet_placement(fleet, get(backend))
    for gateway in spec.gateways:
        problems += _check_gateway(gateway, spec)
    problems += workloads.check_volumes(spec, _diag)
    runs: list[TaskConfig | DevEnvironmentConfig] = [*spec.tasks, *spec.dev_environments]  # not their join, RunParams
    for doc in runs:
        allowed = workload_backends(doc)
        if doc.backends and not set(doc.backends) & set(allowed):
            problems.append(_diag(doc, "backends", f"{doc.KIND} {doc.name}: backends {', '.join(doc.backends)} are not "
                                                   f"implemented yet for a {doc.KIND} (implemented: {', '.join(allowed)})"))
    return problems


def _check_gateway(gateway: GatewayConfig, spec: Spec) -> list[Diagnostic]:
    backend = get(gateway.backend)
    if not backend.implemented:
        return [_diag(gateway, "backend", f"gateway {gateway.name}: backend {gateway.backend} is not implemented yet "
                                          f"(implemented: {', '.join(IMPLEMENTED_BACKENDS)})")]
    problems = []
    if isinstance(backend, Ssh):
        problems += _check_ssh_gateway(gateway, spec)
    elif isinstance(backend, Local):
        problems += _check_local_gateway(gateway)
    if not gateway.public_ip and not backend.private_gateway:
        where = ", ".join(b.name for b in implemented() if b.private_gateway)
        problems.append(_diag(gateway, "public_ip", f"gateway {gateway.name}: public_ip: false is not implemented on "
                                                    f"{backend.name} (implemented on: {where}); remove it to give the "
                                                    "gateway a public address"))
    return problems


def _check_fleet_placement(fleet: FleetConfig, backend: Backend) -> list[Diagnostic]:
    """`placement`, `reservation` and `blocks` on a cloud or cluster fleet: honoured where the backend
    can, refused (naming where it can) elsewhere. Host fleets have their own rules."""
    if not backend.implemented or isinstance(backend, HostBackend):
        return []
    where = {k: ", ".join(b.name for b in implemented() if getattr(b, k)) or "none" for k in ("cluster_placement", "reservations")}
    problems = []
    if fleet.placement == "cluster" and not backend.cluster_placement:
        problems.append(_diag(fleet, "placement", f"fleet {fleet.name}: placement: cluster is not implemented on {backend.name} "
                                                  f"(implemented on: {where['cluster_placement']})"))
    if fleet.reservation and not backend.reservations:
        problems.append(_diag(fleet, "reservation", f"fleet {fleet.name}: reservation is not implemented on {backend.name} "
                                                    f"(implemented on: {where['reservations']})"))
    if fleet.reservation and fleet.spot_policy in ("spot", "auto"):
        problems.append(_diag(fleet, "reservation", f"fleet {fleet.name}: a capacity reservation holds on-demand capacity; "
                                                    "set spot_policy: on-demand"))
    if fleet.blocks != 1:
        problems.append(_diag(fleet, "blocks", f"fleet {fleet.name}: blocks (sharing a node between workloads) is not "
                                               f"implemented on {backend.name}; the controller places replicas by their resources"))
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
    workload_backend = Ssh.name if spec.fleets and all(f.is_ssh for f in spec.fleets) else Local.name
    runs: list[TaskConfig | DevEnvironmentConfig] = [*spec.tasks, *spec.dev_environments]  # not their join, RunParams
    for doc in runs:
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



def _check_service(service: ServiceConfig, ctx: StackContext, facts: Facts, backend_name: str) -> list[Diagnostic]:
    backend = get(backend_name)
    if not isinstance(backend, Local):
        if isinstance(backend, ClusterBackend):
            _warn_gpu_labels(service, ctx)
        return _check_remote_service(service, backend_name)
    problems = []
    for i, group in enumerate(service.groups):
        at = f"replica_groups[{i}]" if service.replica_groups else ""
        # The agent runs an image only where a Docker daemon answers; say so now rather than at up.
        if group.image and not facts.docker():
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
    # Container options are honoured by the agent for image groups; a group without an image is a process.
    processes = [g.name for g in service.groups if not g.image]
    for prop, set_ in (("entrypoint", service.entrypoint is not None), ("privileged", service.privileged),
                       ("registry_auth", service.registry_auth is not None), ("user", service.user is not None),
                       ("home_dir", service.home_dir != "/root"),
                       ("resources.shm_size", any(g.resources is not None and g.resources.shm_size is not None
                                                  for g in service.groups))):
        if set_ and (processes or prop == "home_dir"):
            where = f"group {', '.join(processes)} (no image)" if prop != "home_dir" else "containers and processes"
            ctx.warn(f"service {service.name}: {prop} is ignored by the local backend for {where}")
    if service.model is not None and getattr(service.model, "format", "openai") == "tgi":
        ctx.warn(f"service {service.name}: model format tgi is served as OpenAI-compatible; chat_template and eos_token are ignored")
    return problems



def _warn_gpu_labels(service: ServiceConfig, ctx: StackContext) -> None:
    """On Kubernetes a GPU count is the device plugin's resource; GPU names and memory become node
    affinity on labels only GPU feature discovery sets (the GPU Operator runs it)."""
    for group in service.groups:
        gpu = group.resources.gpu if group.resources is not None else None
        if gpu is not None and not gpu.none and (gpu.names or gpu.memory is not None):
            ctx.warn(f"service {service.name} group {group.name}: GPU names or memory on kubernetes select nodes by "
                     "the nvidia.com/gpu.product and nvidia.com/gpu.memory labels GPU feature discovery sets; without "
                     "it no node matches (a GPU count alone needs only the device plugin)")


def _check_remote_service(service: ServiceConfig, backend: str) -> list[Diagnostic]:
    problems = []
    if not get(backend).implemented:
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



_PORT_VARIABLE = re.compile(r"\$\{?(GPUSTACK_)?PORT\b")


def _binds_declared_port(commands: Sequence[str], port: int) -> bool:
    """Commands that name the declared port (`--port 8000`, as most of dstack's examples do) and
    never $PORT bind it themselves. A program that reads PORT from its environment names neither."""
    text = "\n".join(commands)
    return not _PORT_VARIABLE.search(text) and re.search(rf"(?<![\d.]){port}(?!\d)", text) is not None


def _check_host_ports(service: ServiceConfig, definition: Definition, hosts: Sequence[PlannedHost]) -> list[Diagnostic]:
    """Groups whose commands bind the declared port need a host each per replica: refuse more replicas than hosts."""
    problems = []
    for i, (group, config) in enumerate(zip(definition["groups"], service.groups)):
        wanted = config.replicas.max if config.replicas.max is not None else config.replicas.min
        if group.get("host_port") and hosts and wanted is not None and wanted > len(hosts):
            at = f"replica_groups[{i}].replicas" if service.replica_groups else "replicas"
            problems.append(_diag(service, at, f"service {service.name} group {config.name}: {wanted} replicas bind port "
                                  f"{group['host_port']} themselves (no $PORT in commands), one per host, and the fleets have "
                                  f"{len(hosts)} host(s); use $PORT in the commands, or image:, or fewer replicas"))
    return problems


def _check_placement(service: ServiceConfig, definition: Definition, hosts: Sequence[PlannedHost]) -> list[Diagnostic]:
    """A group no host can take one replica of would wait for capacity forever: refuse it now."""
    problems = _check_host_ports(service, definition, hosts)
    for bad in unsatisfiable_groups(definition, hosts):
        group = service.groups[bad.group_index]
        at = f"replica_groups[{bad.group_index}].resources" if service.replica_groups else "resources"
        if group.resources is None:
            at = at.rsplit(".", 1)[0] if service.replica_groups else "type"
        problems.append(_diag(service, at, f"service {service.name} group {bad.group}: no host can run a replica: {bad.message}"))
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



def _definition(service: ServiceConfig, ctx: StackContext, local: bool = True) -> Definition:
    definition = service.to_runtime()
    base = Path(service.source.file).parent if service.source else Path.cwd()
    for group, config in zip(definition["groups"], service.groups):
        # A replica's process is its own "instance" here: setup runs before the commands, every start.
        group["commands"] = list(service.setup) + group["commands"]
        if group.get("image"):
            _container_group(group, service, config, ctx)
        else:
            _process_group(group, service, config, base, ctx)
        if not local:
            if not group.get("image"):
                # A cloud node has no copy of this machine's directories: no path of the planning machine
                # goes into the definition (a `working_dir` is refused there, support.MATRIX).
                group["working_dir"] = None
            continue  # on a cloud, regions, instance types and the spot policy are what placement decides
        # Warned about as ignored (see _LOCAL_IGNORED): the controller must not enforce them either,
        # or no local host would ever match `regions: [eu-west-1]`.
        placement = group.get("placement") or {}
        for key in ("regions", "instance_types"):
            placement[key] = []
        placement["spot_policy"] = placement["max_price"] = None
    return definition


def _container_group(group: Definition, service: ServiceConfig, config: Any, ctx: StackContext) -> None:
    # Inside the image: an absolute working_dir, else the image's own (never this machine's path).
    group["working_dir"] = service.working_dir if (service.working_dir or "").startswith("/") else None
    group["container"] = workloads.container_options(service, config.resources)
    auth = group["container"]["registry_auth"]
    if auth is not None:
        # A changed password restarts the replicas through this keyed fingerprint: the password itself
        # never enters the generation, which state keeps in plaintext (contract/restart.py).
        group["container"]["auth_fingerprint"] = ctx.fingerprint_values({"p": auth["password"]})["p"]


def _process_group(group: Definition, service: ServiceConfig, config: Any, base: Path, ctx: StackContext) -> None:
    # Commands run from the configuration's directory, as they would from the repository in a container.
    group["working_dir"] = str((base / (group.get("working_dir") or ".")).resolve())
    if service.port and _binds_declared_port(group["commands"], int(service.port)):
        # dstack's services listen on their declared port: two such processes on one host would
        # collide, so the replica gets that port and placement puts one per host and port.
        group["host_port"] = int(service.port)
        ctx.warn(f"service {service.name} group {config.name}: the commands bind port {service.port} themselves "
                 "(no $PORT), so at most one replica runs per host; use $PORT, or image:, for several per host")
