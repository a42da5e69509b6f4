"""A fleet: the hosts replicas run on, each with an agent."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi

from gpustack_iac.providers import local, wheelhouse
from gpustack_iac.backends import Local, fleet_host_backend, plugin
from gpustack_iac.backends.cloud import Network, NodeGroup
from gpustack_iac.spec.models import FleetConfig
from gpustack_iac.stacks.context import StackContext


@dataclass(frozen=True)
class FleetHost:
    """A host as gateways need it to register its agent."""

    name: str
    url: pulumi.Output[str]
    token: pulumi.Output[str]
    labels: dict[str, Any]
    tunnel: pulumi.Output[dict[str, Any]] | None = None  # SSH fleet hosts: how the controller reaches the agent
    ssh_props: dict[str, Any] | None = None  # SSH fleet hosts: how to log in (a gateway may be installed there)
    resource: pulumi.Resource | None = None  # SSH fleet hosts: the Host a gateway there depends on
    address: str | None = None  # SSH fleet hosts: where other hosts reach this one (a task's MASTER_ADDR)


class Fleet(pulumi.ComponentResource):
    hosts: list[FleetHost]
    join_secret: Any = None
    scaling_groups: list[Any] = []  # the node groups' cloud resources, where the gateway is granted them by resource (Azure)

    def __init__(self, config: FleetConfig, ctx: StackContext, opts: pulumi.ResourceOptions | None = None,
                 node_groups: list[NodeGroup] | None = None, network: Network | None = None,
                 shared_network: Any = None) -> None:
        name = str(config.name)
        super().__init__("gpustack:index:Fleet", name, {"spec": self.spec_of(config, ctx)}, opts)
        backend = fleet_host_backend(config)
        if config.is_ssh:
            self.hosts = _ssh_hosts(self, config, ctx)
        elif isinstance(backend, Local):
            self.hosts = _local_hosts(self, config, ctx)
        else:
            # Cloud nodes come and go with their scaling group; their agents start from user data.
            self.hosts = []
            if node_groups:
                made = plugin(backend.name).resources().node_groups(name, node_groups, network or Network(()), ctx.project,
                                                           ctx.stack, self, shared=shared_network)
                # Where the backend keeps the join secret in a resource the gateway must be granted (GCP).
                self.join_secret = getattr(made, "join_secret", None)
                self.scaling_groups = list(getattr(made, "groups", None) or [])
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
    return [(f"{config.name}-{i}", dict(labels)) for i in range(local_host_count(config))]


def local_host_count(config: FleetConfig) -> int:
    """How many agents a local fleet starts: dstack's `nodes.target` when given, else the minimum (at least one)."""
    assert config.nodes is not None
    return max(config.nodes_target if config.nodes_target is not None else config.nodes.min or 0, 1)


def _local_hosts(parent: Fleet, config: FleetConfig, ctx: StackContext) -> list[FleetHost]:
    assert config.nodes is not None  # a local fleet is a backend fleet (checked by the model)
    count = local_host_count(config)
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


def ssh_host_name(fleet: str, hostname: str) -> str:
    """A host's resource name from its address, so removing one host renames no other."""
    return f"{fleet}-{re.sub(r'[^A-Za-z0-9]+', '-', hostname).strip('-').lower()}"


def ssh_host_props(config: FleetConfig) -> list[dict[str, Any]]:
    """Each host of an SSH fleet as the provider takes it: name, SSH endpoint and its overrides, labels."""
    ssh_config = config.ssh_config
    assert ssh_config is not None
    hosts = []
    for h in ssh_config.hosts:
        jump = h.proxy_jump or ssh_config.proxy_jump
        labels = {"backend": "ssh", "region": "ssh", "instance_type": "ssh", "fleet": str(config.name), "hostname": h.hostname}
        hosts.append({
            "name": ssh_host_name(str(config.name), h.hostname), "hostname": h.hostname, "port": h.port or ssh_config.port or 22,
            "user": h.user or ssh_config.user, "identity_file": h.identity_file or ssh_config.identity_file,
            "proxy_jump": jump.model_dump(exclude_none=True) if jump else None,
            "known_hosts": ssh_config.known_hosts, "host_key": h.host_key, "host_key_policy": ssh_config.host_key_policy,
            "install_dir": ssh_config.install_dir, "labels": labels,
            "network": ssh_config.network, "internal_ip": h.internal_ip if ssh_config.network else None,
        })
    return hosts


def _ssh_hosts(parent: Fleet, config: FleetConfig, ctx: StackContext) -> list[FleetHost]:
    from gpustack_iac.providers import ssh  # noqa: PLC0415 - fabric loads only for stacks with SSH fleets

    package_key = wheelhouse.package_key()
    hosts = []
    assert config.ssh_config is not None
    for base, entry in zip(ssh_host_props(config), config.ssh_config.hosts):
        host_name, labels = base["name"], base["labels"]
        props = {**base, "cache_dir": str(wheelhouse.user_cache("ssh-wheelhouse")), "package_key": package_key}
        host = ssh.Host(host_name, props, pulumi.ResourceOptions(parent=parent))
        hosts.append(FleetHost(name=host_name, url=host.url, token=host.token, labels=labels, tunnel=host.tunnel,
                               ssh_props=props, resource=host, address=entry.internal_ip or entry.hostname))
    return hosts


def probe_ssh_hosts(fleets: list[FleetConfig], offline: bool = False) -> list[Any]:
    """What every host of these SSH fleets has, probed over SSH with nothing installed
    (`providers/sshfacts.py`'s ProbedHost, one per host)."""
    # fabric and paramiko load only for stacks with SSH fleets (about 0.3 s of every local plan otherwise).
    from gpustack_iac.providers.sshconn import SshTarget  # noqa: PLC0415
    from gpustack_iac.providers.sshfacts import probe_hosts  # noqa: PLC0415

    return probe_hosts([(p["name"], SshTarget.from_props(p), p["labels"], p["install_dir"])
                        for f in fleets if f.is_ssh for p in ssh_host_props(f)], offline)
