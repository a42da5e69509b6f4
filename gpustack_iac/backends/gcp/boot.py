"""The startup scripts of GCP nodes and gateways, and the Secret Manager ids they carry. No SDK:
resources.py renders them once the bucket's name and the project are known, and the boot rehearsal
(tests/cloud/rehearsal/) renders the same scripts against local stand-ins."""

from __future__ import annotations

from gpustack_iac.backends.cloud import AGENT_PORT, CONTROLLER_URL, GatewayInstance, NodeGroup, gateway_args, require_runtime
from gpustack_iac.providers.cloudboot import BootSource, Endpoints, GatewayBoot, NodeJoin, gateway_boot, node_boot


def agent_secret_id(project: str, stack: str, fleet: str) -> str:
    return f"gpustack-{project}-{stack}-{fleet}-agent-token"


def join_secret_id(project: str, stack: str, fleet: str) -> str:
    return f"gpustack-{project}-{stack}-{fleet}-join-token"


def gateway_prefix(project: str, stack: str, gateway: str) -> str:
    return f"gpustack-{project}-{stack}-{gateway}"


def node_script(project: str, stack: str, group: NodeGroup, bucket: str, gcp_project: str | None,
                endpoints: Endpoints | None = None, controller_url: str = CONTROLLER_URL) -> str:
    runtime = require_runtime(group.runtime, f"node group {group.name}")
    join = NodeJoin(agent_token_secret=agent_secret_id(project, stack, group.fleet),
                    join_token_secret=join_secret_id(project, stack, group.fleet), fleet=group.fleet,
                    node_group=group.name, controller_url=controller_url, agent_port=AGENT_PORT,
                    labels=(("backend", "gcp"), ("region", group.region), ("spot", str(group.spot).lower())))
    return node_boot(BootSource(cloud="gcp", region=group.region, bucket=bucket, bundle=runtime.bundle, project=gcp_project,
                                endpoints=endpoints), join)


def gateway_script(project: str, stack: str, gw: GatewayInstance, bucket: str, gcp_project: str | None,
                   fleets: list[str], endpoints: Endpoints | None = None) -> str:
    """The gateway's startup script; it reads each of `fleets`' join tokens by its own id (its
    account may read exactly those, and list nothing)."""
    runtime = require_runtime(gw.runtime, f"gateway {gw.name}")
    prefix = gateway_prefix(project, stack, gw.name)
    boot = GatewayBoot(token_secret=f"{prefix}-token", admin_token_secret=f"{prefix}-admin-token", args=gateway_args(gw),
                       joins_path=" ".join(f"{f}={join_secret_id(project, stack, f)}" for f in sorted(fleets)) or None)
    return gateway_boot(BootSource(cloud="gcp", region=gw.region, bucket=bucket, bundle=runtime.bundle, project=gcp_project,
                                   endpoints=endpoints), boot)
