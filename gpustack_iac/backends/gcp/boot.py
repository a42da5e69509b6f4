"""The startup scripts of GCP nodes and gateways, and the Secret Manager ids they carry. No SDK:
resources.py renders them once the bucket's name and the project are known, and the boot rehearsal
(tests/cloud/rehearsal/) renders the same scripts against local stand-ins."""

from __future__ import annotations

import hashlib
import json
import re

from gpustack_iac.backends.cloud import AGENT_PORT, CONTROLLER_URL, GatewayInstance, NodeGroup, gateway_args, require_runtime
from gpustack_iac.providers.cloudboot import BootSource, Endpoints, GatewayBoot, NodeJoin, gateway_boot, node_boot


def agent_secret_id(project: str, stack: str, fleet: str) -> str:
    return f"gpustack-{project}-{stack}-{fleet}-agent-token"


def join_secret_id(project: str, stack: str, fleet: str) -> str:
    return f"gpustack-{project}-{stack}-{fleet}-join-token"


def gateway_prefix(project: str, stack: str, gateway: str) -> str:
    return f"gpustack-{project}-{stack}-{gateway}"


def mig_name(project: str, stack: str, group: NodeGroup) -> str:
    """The regional managed instance group's own name: fixed, because the controller resizes it by
    name, the gateway's role is conditioned on it and the group's agents join with it as their node
    group. A Compute Engine name (lowercase letters, digits, dashes; at most 63), shortened with a
    digest of the full name where it would be longer."""
    full = re.sub(r"[^a-z0-9-]+", "-", f"gpustack-{project}-{stack}-{group.name}".lower()).strip("-")
    if len(full) <= 63:
        return full
    return f"{full[:54].rstrip('-')}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"


def mig_resource(gcp_project: str, region: str, name: str) -> str:
    """The group's IAM resource name (what the gateway's role binding is conditioned on)."""
    return f"projects/{gcp_project}/regions/{region}/instanceGroupManagers/{name}"


def agent_labels(group: NodeGroup) -> dict[str, str]:
    return {"backend": "gcp", "region": group.region, "spot": str(group.spot).lower()}


def node_groups_file(groups: list[NodeGroup], project: str, stack: str, gcp_project: str, region: str,
                     endpoints: Endpoints | None = None) -> str:
    """The gateway's --node-groups JSON (runtime/controller/sizing_config.py) for these regional MIGs.
    `endpoints` (the boot rehearsal's stand-ins) aim the controller's Compute calls and token elsewhere."""
    doc: dict[str, object] = {"kind": "gcp", "project": gcp_project, "region": region, "groups": [
        {"name": mig_name(project, stack, g), "fleet": g.fleet, "min": g.min_size, "max": g.max_size,
         "gpus": g.gpu_count, "labels": agent_labels(g), "idle_duration": g.idle_duration} for g in groups]}
    if endpoints is not None:
        doc.update(metadata=endpoints.metadata, api=endpoints.api)
    return json.dumps(doc, sort_keys=True)


def node_script(project: str, stack: str, group: NodeGroup, bucket: str, gcp_project: str | None,
                endpoints: Endpoints | None = None, controller_url: str = CONTROLLER_URL) -> str:
    runtime = require_runtime(group.runtime, f"node group {group.name}")
    join = NodeJoin(agent_token_secret=agent_secret_id(project, stack, group.fleet),
                    join_token_secret=join_secret_id(project, stack, group.fleet), fleet=group.fleet,
                    node_group=mig_name(project, stack, group), controller_url=controller_url, agent_port=AGENT_PORT,
                    labels=tuple(sorted(agent_labels(group).items())))
    return node_boot(BootSource(cloud="gcp", region=group.region, bucket=bucket, bundle=runtime.bundle, project=gcp_project,
                                endpoints=endpoints), join)


def gateway_script(project: str, stack: str, gw: GatewayInstance, bucket: str, gcp_project: str | None,
                   fleets: list[str], endpoints: Endpoints | None = None, sized: list[NodeGroup] | None = None) -> str:
    """The gateway's startup script; it reads each of `fleets`' join tokens by its own id (its
    account may read exactly those, and list nothing), and its controller resizes the `sized` MIGs
    (its region's)."""
    runtime = require_runtime(gw.runtime, f"gateway {gw.name}")
    prefix = gateway_prefix(project, stack, gw.name)
    if sized and not gcp_project:
        raise ValueError(f"gateway {gw.name}: sizing node groups needs the GCP project's id")
    groups = node_groups_file(sized, project, stack, gcp_project, gw.region, endpoints) if sized and gcp_project else None
    boot = GatewayBoot(token_secret=f"{prefix}-token", admin_token_secret=f"{prefix}-admin-token", args=gateway_args(gw),
                       joins_path=" ".join(f"{f}={join_secret_id(project, stack, f)}" for f in sorted(fleets)) or None,
                       node_groups=groups)
    return gateway_boot(BootSource(cloud="gcp", region=gw.region, bucket=bucket, bundle=runtime.bundle, project=gcp_project,
                                   endpoints=endpoints), boot)
