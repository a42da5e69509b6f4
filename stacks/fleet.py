"""A fleet: the hosts replicas run on, each with an agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from gpustack_iac.providers import local
from gpustack_iac.providers.cloud import Network, NodeGroup
from gpustack_iac.spec.models import FleetConfig
from gpustack_iac.stacks.context import StackContext


@dataclass(frozen=True)
class FleetHost:
    """A host as gateways need it to register its agent."""

    name: str
    url: pulumi.Output[str]
    token: pulumi.Output[str]
    labels: dict[str, Any]


class Fleet(pulumi.ComponentResource):
    hosts: list[FleetHost]

    def __init__(self, config: FleetConfig, ctx: StackContext, opts: pulumi.ResourceOptions | None = None,
                 node_groups: list[NodeGroup] | None = None, network: Network | None = None,
                 shared_network: Any = None) -> None:
        name = str(config.name)
        super().__init__("gpustack:index:Fleet", name, {"spec": self.spec_of(config, ctx)}, opts)
        backend = (config.backends or ["local"])[0]
        if backend == "local":
            self.hosts = _local_hosts(self, config, ctx)
        else:
            # Cloud nodes come and go with their scaling group; their agents start from user data.
            self.hosts = []
            if node_groups:
                from gpustack_iac.stacks.cloud import backend_module

                backend_module(backend).node_groups(name, node_groups, network or Network(()), ctx.project, ctx.stack, self,
                                                    shared=shared_network)
        self.register_outputs({"hosts": [h.name for h in self.hosts]})

    @staticmethod
    def spec_of(config: FleetConfig, ctx: StackContext) -> dict[str, Any]:
        """What the component records of its configuration (and the plan summary compares)."""
        spec = config.model_dump(mode="json", exclude_none=True)
        spec["env"] = ctx.fingerprint_values(spec.get("env") or {})
        return spec


def local_host_names(config: FleetConfig) -> list[tuple[str, dict[str, Any]]]:
    """The name and labels of each host a local fleet starts (also what `plan` checks placement against)."""
    assert config.nodes is not None  # a local fleet is a backend fleet (checked by the model)
    labels = {"backend": "local", "region": "local", "instance_type": "local", "fleet": str(config.name)}
    return [(f"{config.name}-{i}", dict(labels)) for i in range(max(config.nodes.min, 1))]


def _local_hosts(parent: Fleet, config: FleetConfig, ctx: StackContext) -> list[FleetHost]:
    assert config.nodes is not None  # a local fleet is a backend fleet (checked by the model)
    count = max(config.nodes.min, 1)
    if not config.nodes.fixed:
        ctx.warn(f"fleet {config.name}: the local backend does not scale hosts; starting {count} of nodes {config.nodes}")
    hosts = []
    for host_name, labels in local_host_names(config):
        agent = local.Agent(
            host_name,
            {"name": host_name, "state_dir": str(ctx.local_dir("hosts", host_name)), "labels": labels},
            pulumi.ResourceOptions(parent=parent),
        )
        hosts.append(FleetHost(name=host_name, url=agent.url, token=agent.token, labels=labels))
    return hosts
