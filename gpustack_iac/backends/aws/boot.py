"""The boot scripts of AWS nodes and gateways, and the names they carry (SSM paths, Auto Scaling
group names). No SDK: resources.py renders them once the bucket's name is known, and the boot
rehearsal (tests/cloud/rehearsal/) renders the same scripts against local stand-ins."""

from __future__ import annotations

import json

from gpustack_iac.backends.cloud import AGENT_PORT, CONTROLLER_URL, GatewayInstance, NodeGroup, gateway_args, require_runtime
from gpustack_iac.providers.cloudboot import BootSource, Endpoints, GatewayBoot, NodeJoin, gateway_boot, node_boot


def stack_path(project: str, stack: str) -> str:
    return f"/gpustack/{project}/{stack}"


def agent_token_path(project: str, stack: str, fleet: str) -> str:
    return f"{stack_path(project, stack)}/fleets/{fleet}/agent-token"


def joins_path(project: str, stack: str) -> str:
    """Where the fleets' join tokens live: one path, so the gateway can list them all."""
    return f"{stack_path(project, stack)}/joins"


def gateway_path(project: str, stack: str, gateway: str) -> str:
    return f"{stack_path(project, stack)}/gateways/{gateway}"


def asg_name(project: str, stack: str, group: NodeGroup) -> str:
    """The Auto Scaling group's own name: fixed, because the controller sizes it by name and the
    group's agents join with it as their node group."""
    return f"gpustack-{project}-{stack}-{group.name}"


def agent_labels(group: NodeGroup) -> dict[str, str]:
    return {"backend": "aws", "region": group.region, "spot": str(group.spot).lower()}


def node_groups_file(groups: list[NodeGroup], project: str, stack: str, region: str) -> str:
    """The gateway's --node-groups JSON (runtime/controller/sizing_config.py) for these groups."""
    return json.dumps({"kind": "aws", "region": region, "groups": [
        {"name": asg_name(project, stack, g), "fleet": g.fleet, "min": g.min_size, "max": g.max_size,
         "gpus": g.gpu_count, "labels": agent_labels(g), "idle_duration": g.idle_duration} for g in groups]},
        sort_keys=True)


def node_script(project: str, stack: str, group: NodeGroup, bucket: str, endpoints: Endpoints | None = None,
                controller_url: str = CONTROLLER_URL) -> str:
    """A node's user data: the pinned runtime from `bucket`, the tokens by their SSM names, the agent."""
    runtime = require_runtime(group.runtime, f"node group {group.name}")
    join = NodeJoin(agent_token_secret=agent_token_path(project, stack, group.fleet),
                    join_token_secret=f"{joins_path(project, stack)}/{group.fleet}", fleet=group.fleet,
                    node_group=asg_name(project, stack, group), controller_url=controller_url, agent_port=AGENT_PORT,
                    labels=tuple(sorted(agent_labels(group).items())))
    return node_boot(BootSource(cloud="aws", region=group.region, bucket=bucket, bundle=runtime.bundle,
                                endpoints=endpoints), join)


def gateway_script(project: str, stack: str, gw: GatewayInstance, bucket: str, sized: list[NodeGroup],
                   endpoints: Endpoints | None = None) -> str:
    """The gateway's user data; the controller sizes the `sized` groups (its region's)."""
    runtime = require_runtime(gw.runtime, f"gateway {gw.name}")
    base = gateway_path(project, stack, gw.name)
    boot = GatewayBoot(token_secret=f"{base}/token", admin_token_secret=f"{base}/admin-token", args=gateway_args(gw),
                       joins_path=joins_path(project, stack),
                       node_groups=node_groups_file(sized, project, stack, gw.region) if sized else None)
    return gateway_boot(BootSource(cloud="aws", region=gw.region, bucket=bucket, bundle=runtime.bundle,
                                   endpoints=endpoints), boot)
