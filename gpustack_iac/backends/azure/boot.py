"""The custom data of Azure nodes and gateways. No SDK: resources.py renders it once the vault,
storage account and managed identity are known, and the boot rehearsal (tests/cloud/rehearsal/)
renders the same scripts against local stand-ins. A secret is named `VAULT/NAME`."""

from __future__ import annotations

import json

from gpustack_iac.backends.cloud import AGENT_PORT, CONTROLLER_URL, GatewayInstance, NodeGroup, gateway_args, require_runtime
from gpustack_iac.providers.cloudboot import BootSource, Endpoints, GatewayBoot, NodeJoin, gateway_boot, node_boot
from gpustack_iac.providers.runtime_bundle import CloudRuntime

CONTAINER = "gpustack-runtime"  # the runtime's private container in the stack's storage account


def _source(runtime: CloudRuntime, region: str, account: str, client_id: str, endpoints: Endpoints | None) -> BootSource:
    return BootSource(cloud="azure", region=region, bucket=CONTAINER, bundle=runtime.bundle, account=account,
                      identity=client_id, endpoints=endpoints)


def agent_labels(group: NodeGroup) -> dict[str, str]:
    return {"backend": "azure", "region": group.region, "spot": str(group.spot).lower()}


def node_groups_file(groups: list[NodeGroup], subscription: str, resource_group: str, client_id: str,
                     endpoints: Endpoints | None = None) -> str:
    """The gateway's --node-groups JSON (runtime/controller/sizing_config.py) for these scale sets,
    each named as its group (unique in the stack's own resource group), sized as the managed identity
    `client_id`. `endpoints` (the boot rehearsal's stand-ins) aim the ARM calls and token elsewhere."""
    doc: dict[str, object] = {"kind": "azure", "subscription": subscription, "resource_group": resource_group,
                              "identity": client_id, "groups": [
        {"name": g.name, "fleet": g.fleet, "min": g.min_size, "max": g.max_size, "gpus": g.gpu_count,
         "labels": agent_labels(g), "idle_duration": g.idle_duration} for g in groups]}
    if endpoints is not None:
        doc.update(metadata=endpoints.metadata, api=endpoints.api)
    return json.dumps(doc, sort_keys=True)


def node_script(group: NodeGroup, vault: str, account: str, client_id: str, endpoints: Endpoints | None = None,
                controller_url: str = CONTROLLER_URL) -> str:
    """A node's custom data: the runtime from `account`, the tokens from its fleet's `vault`, as the
    managed identity `client_id`."""
    runtime = require_runtime(group.runtime, f"node group {group.name}")
    join = NodeJoin(agent_token_secret=f"{vault}/agent-token", join_token_secret=f"{vault}/join-token",
                    fleet=group.fleet, node_group=group.name, controller_url=controller_url, agent_port=AGENT_PORT,
                    labels=tuple(sorted(agent_labels(group).items())))
    return node_boot(_source(runtime, group.region, account, client_id, endpoints), join)


def gateway_script(gw: GatewayInstance, vault: str, account: str, client_id: str, fleet_vaults: dict[str, str],
                   endpoints: Endpoints | None = None, sized: list[NodeGroup] | None = None,
                   resource_group: str | None = None) -> str:
    """The gateway's custom data; each fleet's join token is read by name from that fleet's vault
    (the identity may read exactly those), and its controller sets the capacity of the `sized` scale
    sets in `resource_group` (`/subscriptions/<id>/resourceGroups/<name>`, the group's resource id)."""
    runtime = require_runtime(gw.runtime, f"gateway {gw.name}")
    groups = None
    if sized:
        parts = (resource_group or "").split("/")
        if len(parts) != 5 or parts[1] != "subscriptions" or parts[3] != "resourceGroups":
            raise ValueError(f"gateway {gw.name}: sizing scale sets needs their resource group's id, got {resource_group!r}")
        groups = node_groups_file(sized, parts[2], parts[4], client_id, endpoints)
    boot = GatewayBoot(token_secret=f"{vault}/token", admin_token_secret=f"{vault}/admin-token", args=gateway_args(gw),
                       joins_path=" ".join(f"{f}={v}/join-token" for f, v in sorted(fleet_vaults.items())) or None,
                       node_groups=groups)
    return gateway_boot(_source(runtime, gw.region, account, client_id, endpoints), boot)
