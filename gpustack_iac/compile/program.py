"""Configuration → one Pulumi program, in three steps and never back:

1. facts (`facts.py`): the only I/O — this machine, Docker, SSH probes;
2. checks (`checks.py`): pure, a typed `StackPlan` of what to build, or ConfigError;
3. program (here): the Pulumi program declared from that plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pulumi

from gpustack_iac import compile_code
from gpustack_iac import compile_workloads as workloads
from gpustack_iac.backends import ClusterBackend, WithPulumiPlugin, fleet_backend, get
from gpustack_iac.backends.cloud import Network
from gpustack_iac.compile.checks import Definition, StackPlan, check
from gpustack_iac.compile.facts import Facts
from gpustack_iac.cost import Cost, deployed_cost
from gpustack_iac.hostcheck import PlannedHost
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import GatewayConfig
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.code import code_resources
from gpustack_iac.stacks.devenv import DevEnvironment
from gpustack_iac.stacks.fleet import Fleet
from gpustack_iac.stacks.gateway import Gateway
from gpustack_iac.stacks.placement import vm_backend
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




def compile_spec(spec: Spec, ctx: StackContext, hosts: Sequence[PlannedHost] | None = None, offline: bool = False) -> CompiledStack:
    """Check what the backends can do and return the program; raises ConfigError with every problem.

    `hosts` are the facts of every host the stack's fleets will have, from whichever backend knows
    them; by default the local fleets' hosts, measured on this machine, and the SSH fleets' hosts,
    probed over SSH (an unreachable one is shown, and left out of the check). `offline` probes none.
    """
    plan = check(spec, ctx, Facts(spec, ctx, hosts, offline))
    for backend_name in plan.plugin_backends:
        backend = get(backend_name)
        assert isinstance(backend, WithPulumiPlugin), f"plugin backend {backend_name} has no Pulumi plugin"
        backend.resources()  # a missing provider SDK is one line naming the extra, before any engine runs
    return CompiledStack(program=lambda: _Program(spec, ctx, plan).declare(), warnings=list(ctx.warnings),
                         definitions=plan.definitions, tasks=plan.tasks,
                         component_specs=lambda: _component_specs(spec, plan.definitions, plan.tasks, plan.devs, ctx),
                         cost=plan.cost, plugin_backends=plan.plugin_backends, hosts=plan.host_lines)


class _Program:
    """The Pulumi program of one plan: what `declare` runs inside the engine."""

    def __init__(self, spec: Spec, ctx: StackContext, plan: StackPlan) -> None:
        self.spec, self.ctx, self.plan = spec, ctx, plan
        self._providers: dict[tuple[str, str | None], pulumi.ProviderResource | None] = {}
        self._networks: dict[tuple[str, str], Any] = {}

    def declare(self) -> None:
        fleets = [self._fleet(f) for f in self.spec.fleets]
        # Runs are created after the code they run from has landed.
        code = code_resources(compile_code.write_archives(self.plan.code, self.ctx), compile_code.code_root(self.ctx), fleets)
        volumes = _workloads(self.spec, self.ctx, fleets, self.plan.tasks, self.plan.devs, code)
        deployed: dict[str, Gateway] = {}
        registrations: dict[str, list[pulumi.Resource]] = {}
        for config in self.spec.gateways:
            gateway = deployed[str(config.name)] = self._gateway(config, fleets)
            registrations[str(config.name)] = [gateway.register_host(h) for fleet in fleets for h in fleet.hosts]
        endpoints: dict[str, pulumi.Output[str]] = {}
        services: dict[str, Service] = {}
        for name, definition in self.plan.definitions.items():
            gw_name = self.plan.service_gateway[name]
            services[name] = Service(definition, deployed[gw_name], registrations[gw_name] + volumes, self.ctx)
            # From the gateway, not the registration: the outputs are then recorded as soon as the
            # gateway runs, even when a service fails to get ready (status, logs and output need them).
            def endpoint(url: str, n: str = name) -> str:
                return f"{url}/services/{n}"

            endpoints[name] = deployed[gw_name].url.apply(endpoint)
        for router in self.spec.routers:
            members = [services[m.service] for m in router.members if m.service in services]
            Router(router, deployed[self.plan.router_gateway[str(router.name)]], members)
        _export(deployed, endpoints, self.plan.gateways)

    def _provider(self, backend: str, region: str | None) -> pulumi.ProviderResource | None:
        from gpustack_iac.stacks.cloud import explicit_provider

        if (backend, region) not in self._providers:
            self._providers[(backend, region)] = explicit_provider(backend, region, self.spec.project)
        return self._providers[(backend, region)]

    def _placed(self, backend: str, region: str) -> tuple[pulumi.ResourceOptions | None, Any]:
        """Options naming the region's explicit provider, and the region's shared network."""
        from gpustack_iac.stacks.cloud import CloudNetwork

        p = self._provider(backend, region)
        opts = pulumi.ResourceOptions(providers=[p]) if p is not None else None
        if (backend, region) not in self._networks:
            self._networks[(backend, region)] = CloudNetwork(backend, region, opts).handle
        return opts, self._networks[(backend, region)]

    def _fleet(self, config: Any) -> Fleet:
        groups = self.plan.node_groups.get(str(config.name))
        opts, handle = self._placed(fleet_backend(config), groups[0].region) if groups else (None, None)
        return Fleet(config, self.ctx, opts, node_groups=groups, network=Network(tuple(config.ssh_from)), shared_network=handle)

    def _gateway(self, config: GatewayConfig, fleets: list[Fleet]) -> Gateway:
        opts, k8s, handle = None, None, None
        if vm_backend(config.backend) is not None:
            opts, handle = self._placed(config.backend, str(config.region))
        elif isinstance(get(config.backend), ClusterBackend):
            k8s = self._provider(config.backend, None)
        same = [(f, fl) for f, fl in zip(self.spec.fleets, fleets) if fleet_backend(f) == config.backend]
        return Gateway(config, self.ctx, opts, instance=self.plan.instances.get(str(config.name)),
                       network=Network(tuple(config.ssh_from)), scaled=self._scaled(str(config.name)), k8s_provider=k8s,
                       shared_network=handle, node_groups=[g for f, _ in same for g in self.plan.node_groups.get(str(f.name)) or []],
                       join_secrets={str(f.name): fl.join_secret for f, fl in same if fl.join_secret is not None},
                       scaling_groups=[r for _, fl in same for r in fl.scaling_groups],
                       fleet_hosts=[h for fleet in fleets for h in fleet.hosts], runtime_image=self.plan.images.get(str(config.name)))

    def _scaled(self, gateway: str) -> Any:
        from gpustack_iac.backends.kubernetes.names import deployment_names

        return deployment_names([d for n, d in self.plan.definitions.items() if self.plan.service_gateway.get(n) == gateway])


def compile_stack(spec: Spec, project: str, stack: str, state_root: Path, fingerprint_key: Callable[[], bytes],
                  offline: bool = False) -> CompiledStack:
    """`compile_spec` for a command: the stack's names, where local processes keep their files, and
    the key env fingerprints are made with (see StackContext)."""
    ctx = StackContext(project=project, stack=stack, state_root=state_root, fingerprint_key=fingerprint_key)
    return compile_spec(spec, ctx, offline=offline)




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




def _component_specs(spec: Spec, definitions: dict[str, Definition], tasks: dict[str, Definition],
                     devs: dict[str, Definition], ctx: StackContext) -> dict[tuple[str, str], dict[str, Any]]:
    """The component specs `up` records, keyed like plan_summary.specs_from_resources."""
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
