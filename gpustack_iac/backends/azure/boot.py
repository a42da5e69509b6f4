"""The custom data of Azure nodes and gateways. No SDK: resources.py renders it once the vault,
storage account and managed identity are known, and the boot rehearsal (tests/cloud/rehearsal/)
renders the same scripts against local stand-ins. A secret is named `VAULT/NAME`."""

from __future__ import annotations

from gpustack_iac.backends.cloud import AGENT_PORT, CONTROLLER_URL, GatewayInstance, NodeGroup, gateway_args, require_runtime
from gpustack_iac.providers.cloudboot import BootSource, Endpoints, GatewayBoot, NodeJoin, gateway_boot, node_boot
from gpustack_iac.providers.runtime_bundle import CloudRuntime

CONTAINER = "gpustack-runtime"  # the runtime's private container in the stack's storage account


def _source(runtime: CloudRuntime, region: str, account: str, client_id: str, endpoints: Endpoints | None) -> BootSource:
    return BootSource(cloud="azure", region=region, bucket=CONTAINER, bundle=runtime.bundle, account=account,
                      identity=client_id, endpoints=endpoints)


def node_script(group: NodeGroup, vault: str, account: str, client_id: str, endpoints: Endpoints | None = None,
                controller_url: str = CONTROLLER_URL) -> str:
    """A node's custom data: the runtime from `account`, the tokens from its fleet's `vault`, as the
    managed identity `client_id`."""
    runtime = require_runtime(group.runtime, f"node group {group.name}")
    join = NodeJoin(agent_token_secret=f"{vault}/agent-token", join_token_secret=f"{vault}/join-token",
                    fleet=group.fleet, node_group=group.name, controller_url=controller_url, agent_port=AGENT_PORT,
                    labels=(("backend", "azure"), ("region", group.region), ("spot", str(group.spot).lower())))
    return node_boot(_source(runtime, group.region, account, client_id, endpoints), join)


def gateway_script(gw: GatewayInstance, vault: str, account: str, client_id: str, fleet_vaults: dict[str, str],
                   endpoints: Endpoints | None = None) -> str:
    """The gateway's custom data; each fleet's join token is read by name from that fleet's vault
    (the identity may read exactly those)."""
    runtime = require_runtime(gw.runtime, f"gateway {gw.name}")
    boot = GatewayBoot(token_secret=f"{vault}/token", admin_token_secret=f"{vault}/admin-token", args=gateway_args(gw),
                       joins_path=" ".join(f"{f}={v}/join-token" for f, v in sorted(fleet_vaults.items())) or None)
    return gateway_boot(_source(runtime, gw.region, account, client_id, endpoints), boot)
