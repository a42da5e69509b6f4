"""GCP resources for a fleet's node groups and a gateway, declared with pulumi-gcp.

A node group is an instance template plus a regional managed instance group; the controller owns
the target size (Pulumi ignores it). Tokens live in Secret Manager; instances read them as their
own service account, which may access exactly those secrets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from gpustack_iac.backends.cloud import (AGENT_PORT, CONTROL_PORT, GATEWAY_PORTS, GATEWAY_PRIVATE_IP, VPC_CIDR, CloudGateway,
                                          GatewayInstance, Network, NodeGroup, new_token, require_runtime, upload_once)
from gpustack_iac.backends.gcp.boot import (agent_secret_id, gateway_prefix, gateway_script, join_secret_id, mig_name,
                                            mig_resource, node_script)
from gpustack_iac.providers.runtime_bundle import CloudRuntime, RuntimeObject

# Ubuntu 24.04 images (Python 3.12, what the pinned runtime is built for); GCP resolves a family to
# its newest image when an instance is created. GPU nodes: the Deep Learning VM family with the
# NVIDIA driver and CUDA 12.8.
GPU_IMAGES = {"x86_64": "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2404-nvidia-570",
              "aarch64": "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2404-nvidia-570-arm64"}
CPU_IMAGES = {"x86_64": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
              "aarch64": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-arm64"}


def image(gpus: int, arch: str) -> str:
    return (GPU_IMAGES if gpus else CPU_IMAGES)[arch]


@dataclass
class GcpStore:
    """The stack's own bucket for the pinned runtime: uniform access, public access prevented."""

    bucket: gcp.storage.Bucket
    objects: dict[str, pulumi.Resource] = field(default_factory=dict)


def store(name: str, region: str, parent: pulumi.Resource, apis: list[gcp.projects.Service]) -> GcpStore:
    bucket = gcp.storage.Bucket(f"{name}-runtime", location=region.upper(), uniform_bucket_level_access=True,
                                public_access_prevention="enforced", force_destroy=True,
                                opts=pulumi.ResourceOptions(parent=parent, depends_on=apis))
    return GcpStore(bucket=bucket)


def upload(bucket: GcpStore, runtime: CloudRuntime, parent: pulumi.Resource) -> list[pulumi.Resource]:
    def declare(name: str, obj: RuntimeObject) -> pulumi.Resource:
        source = pulumi.FileAsset(str(obj.path)) if obj.path is not None else pulumi.StringAsset(obj.data.decode())
        return gcp.storage.BucketObject(name, bucket=bucket.bucket.name, name=obj.key, source=source,
                                        metadata={"sha256": obj.sha256}, content_type="application/octet-stream",
                                        opts=pulumi.ResourceOptions(parent=parent))
    return upload_once(bucket.objects, runtime, declare)


def _runtime_read(name: str, bucket: GcpStore, runtimes: list[CloudRuntime], account: gcp.serviceaccount.Account,
                  parent: pulumi.Resource) -> None:
    """Object read on exactly these runtimes' prefixes (an IAM condition; the bucket has uniform access)."""
    for i, prefix in enumerate(sorted({r.bundle.prefix for r in runtimes})):
        gcp.storage.BucketIAMMember(
            f"{name}-runtime-{i}", bucket=bucket.bucket.name, role="roles/storage.objectViewer",
            member=account.email.apply(lambda e: f"serviceAccount:{e}"),
            condition=bucket.bucket.name.apply(lambda b, p=prefix: {
                "title": "gpustack runtime", "description": f"only {p}/",
                "expression": f'resource.name.startsWith("projects/_/buckets/{b}/objects/{p}/")'}),
            opts=pulumi.ResourceOptions(parent=parent))


# The APIs a stack calls, enabled by the stack (a new project has them off). Never disabled on
# destroy: other stacks and tools in the project may use them.
APIS = ("compute.googleapis.com", "secretmanager.googleapis.com", "iam.googleapis.com", "storage.googleapis.com")
DNS_API = "dns.googleapis.com"


def _apis(name: str, apis: tuple[str, ...], parent: pulumi.Resource) -> list[gcp.projects.Service]:
    return [gcp.projects.Service(f"{name}-{api.split('.')[0]}", service=api, disable_on_destroy=False,
                                 disable_dependent_services=False, opts=pulumi.ResourceOptions(parent=parent))
            for api in apis]


def _secret(name: str, secret_id: str, parent: pulumi.Resource,
            apis: list[gcp.projects.Service]) -> tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]:
    opts = pulumi.ResourceOptions(parent=parent, depends_on=apis)
    secret = gcp.secretmanager.Secret(name, secret_id=secret_id, replication={"auto": {}}, opts=opts)
    version = gcp.secretmanager.SecretVersion(name, secret=secret.id, secret_data=new_token(),
                                              opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["secretData"]))
    return secret, version


def _account(name: str, secrets: list[gcp.secretmanager.Secret], parent: pulumi.Resource,
             apis: list[gcp.projects.Service]) -> gcp.serviceaccount.Account:
    opts = pulumi.ResourceOptions(parent=parent, depends_on=apis)
    account = gcp.serviceaccount.Account(name, account_id=name[:28], display_name=f"gpustack {name}", opts=opts)
    for i, secret in enumerate(secrets):
        gcp.secretmanager.SecretIamMember(f"{name}-{i}", secret_id=secret.id, role="roles/secretmanager.secretAccessor",
                                          member=account.email.apply(lambda e: f"serviceAccount:{e}"), opts=opts)
    return account


@dataclass
class GcpFleet:
    groups: list[gcp.compute.RegionInstanceGroupManager]
    join_secret: gcp.secretmanager.Secret  # the gateway's account is granted access to it


@dataclass
class GcpNetwork:
    net: gcp.compute.Network
    subnet: gcp.compute.Subnetwork
    apis: list[gcp.projects.Service]  # what every resource of the stack waits for
    store: GcpStore  # the runtime's bucket, one per network


def network(name: str, region: str, parent: pulumi.Resource) -> GcpNetwork:
    apis = _apis(name, APIS, parent)
    opts = pulumi.ResourceOptions(parent=parent, depends_on=apis)
    net = gcp.compute.Network(name, auto_create_subnetworks=False, opts=opts)
    subnet = gcp.compute.Subnetwork(f"{name}-{region}", network=net.id, region=region, ip_cidr_range="10.60.0.0/20", opts=opts)
    return GcpNetwork(net=net, subnet=subnet, apis=apis, store=store(name, region, parent, apis))


def _ssh(name: str, net: gcp.compute.Network, ranges: Network, tags: list[str], parent: pulumi.Resource) -> None:
    if ranges.admin_cidrs:
        gcp.compute.Firewall(f"{name}-ssh", network=net.id, direction="INGRESS", allows=[{"protocol": "tcp", "ports": ["22"]}],
                             source_ranges=list(ranges.admin_cidrs), target_tags=tags, opts=pulumi.ResourceOptions(parent=parent))


def node_groups(fleet: str, groups: list[NodeGroup], ranges: Network, project: str, stack: str,
                parent: pulumi.Resource, shared: GcpNetwork | None = None) -> GcpFleet:
    region = groups[0].region
    handle = shared or network(fleet, region, parent)
    net, subnet, apis = handle.net, handle.subnet, handle.apis
    opts = pulumi.ResourceOptions(parent=parent, depends_on=apis)
    tag = f"gpustack-{fleet}"
    gcp.compute.Firewall(f"{fleet}-agent", network=net.id, direction="INGRESS",
                         allows=[{"protocol": "tcp", "ports": [str(AGENT_PORT)]}], source_ranges=["10.60.0.0/16"],
                         target_tags=[tag], opts=opts)
    _ssh(fleet, net, ranges, [tag], parent)
    secret_id = agent_secret_id(project, stack, fleet)
    secret, _ = _secret(f"{fleet}-agent-token", secret_id, parent, apis)
    join_id = join_secret_id(project, stack, fleet)
    join_secret, _ = _secret(f"{fleet}-join-token", join_id, parent, apis)
    account = _account(f"{fleet}-node", [secret, join_secret], parent, apis)
    runtimes = [require_runtime(g.runtime, f"node group {g.name}") for g in groups]
    uploads = [o for r in runtimes for o in upload(handle.store, r, parent)]
    _runtime_read(f"{fleet}-node", handle.store, runtimes, account, parent)
    out = []
    for group in groups:
        def startup_script(got: list[str], g: NodeGroup = group) -> str:
            return node_script(project, stack, g, got[0], got[1])

        startup = pulumi.Output.all(handle.store.bucket.name, account.project).apply(startup_script)
        scheduling: dict[str, object] = {"on_host_maintenance": "TERMINATE", "automatic_restart": not group.spot}
        if group.spot:
            scheduling.update(provisioning_model="SPOT", preemptible=True, instance_termination_action="DELETE")
        template = gcp.compute.InstanceTemplate(
            group.name, machine_type=group.instance_types[0], tags=[tag],
            disks=[{"source_image": image(group.gpu_count, group.arch), "disk_size_gb": group.disk_gb,
                    "boot": True, "auto_delete": True}],
            guest_accelerators=[{"type": group.accelerator, "count": group.gpu_count}] if group.accelerator else None,
            network_interfaces=[{"subnetwork": subnet.id, "access_configs": [{}]}],
            metadata_startup_script=startup, scheduling=scheduling,
            service_account={"email": account.email, "scopes": ["cloud-platform"]},
            labels={k.replace("_", "-"): v for k, v in group.labels.items()}, opts=opts)
        out.append(gcp.compute.RegionInstanceGroupManager(
            group.name, name=mig_name(project, stack, group), region=region, base_instance_name=group.name, versions=[{"instance_template": template.self_link_unique}],
            target_size=group.min_size,
            instance_flexibility_policy={"instance_selections": {"types": {"rank": 1, "machine_types": list(group.instance_types)}}}
            if len(group.instance_types) > 1 else None,
            distribution_policy_target_shape="ANY" if group.spot else "EVEN",
            # Only the region's zones that offer the group's machine types (and so its GPU).
            distribution_policy_zones=list(group.zones) or None,
            update_policy={"type": "PROACTIVE", "minimal_action": "REPLACE", "max_surge_fixed": 3, "max_unavailable_fixed": 0},
            wait_for_instances=False,
            # The controller resizes the group between the fleet's bounds; Pulumi must not reset it.
            # Nodes boot once their runtime is in the bucket.
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[*apis, *uploads], ignore_changes=["targetSize"])))
    return GcpFleet(groups=out, join_secret=join_secret)


# What the controller calls on a MIG (runtime/scaling/gcp.py): get, listErrors and
# listManagedInstances read it; resize and deleteInstances update it (the group's own service agent
# then creates or deletes the VMs, so the gateway needs no right on instances).
SIZER_PERMISSIONS = ("compute.instanceGroupManagers.get", "compute.instanceGroupManagers.update")


def _role_id(project: str, stack: str, gateway: str) -> str:
    """A custom role id: letters, digits, `_` and `.`, 3 to 64 characters."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", f"gpustack_{project}_{stack}_{gateway}_sizer")[:64]


def _sizer(gw: GatewayInstance, project: str, stack: str, sized: list[NodeGroup], account: gcp.serviceaccount.Account,
           parent: pulumi.Resource, apis: list[gcp.projects.Service]) -> None:
    """The gateway's account may read and resize exactly the stack's MIGs in its region: a custom
    role with the two permissions the calls need, bound on the project under an IAM condition naming
    each group (Compute Engine has no IAM policy on a MIG itself). Not roles/compute.instanceAdmin.v1:
    it carries every instance, disk and template permission, which a condition on MIG names turns
    into nothing useful and a reviewer must read to see so."""
    opts = pulumi.ResourceOptions(parent=parent, depends_on=apis)
    role = gcp.projects.IAMCustomRole(f"{gw.name}-sizer", role_id=_role_id(project, stack, gw.name),
                                      title=f"gpustack {project}/{stack} node-group sizer",
                                      permissions=list(SIZER_PERMISSIONS), opts=opts)

    def condition(gcp_project: str) -> dict[str, str]:
        names = [mig_resource(gcp_project, gw.region, mig_name(project, stack, g)) for g in sized]
        return {"title": "gpustack node groups", "description": f"the {project}/{stack} stack's MIGs in {gw.region}",
                "expression": " || ".join(f'resource.name == "{n}"' for n in names)}

    gcp.projects.IAMMember(f"{gw.name}-sizer", project=account.project, role=role.name,
                           member=account.email.apply(lambda e: f"serviceAccount:{e}"),
                           condition=account.project.apply(condition), opts=opts)


def gateway(gw: GatewayInstance, ranges: Network, project: str, stack: str, parent: pulumi.Resource,
            shared: GcpNetwork | None = None, joins: dict[str, gcp.secretmanager.Secret] | None = None,
            node_groups: list[NodeGroup] | None = None) -> CloudGateway:
    handle = shared or network(gw.name, gw.region, parent)
    net, subnet, apis = handle.net, handle.subnet, handle.apis
    opts = pulumi.ResourceOptions(parent=parent, depends_on=apis)
    tag = f"gpustack-{gw.name}"
    gcp.compute.Firewall(f"{gw.name}-gateway", network=net.id, direction="INGRESS",
                         allows=[{"protocol": "tcp", "ports": [str(p) for p in GATEWAY_PORTS]}], source_ranges=["0.0.0.0/0"],
                         target_tags=[tag], opts=opts)
    # Agents in the network join through the control API (the join token guards it).
    gcp.compute.Firewall(f"{gw.name}-join", network=net.id, direction="INGRESS",
                         allows=[{"protocol": "tcp", "ports": [str(CONTROL_PORT)]}], source_ranges=[VPC_CIDR],
                         target_tags=[tag], opts=opts)
    if ranges.admin_cidrs:
        gcp.compute.Firewall(f"{gw.name}-control", network=net.id, direction="INGRESS",
                             allows=[{"protocol": "tcp", "ports": [str(CONTROL_PORT)]}], source_ranges=list(ranges.admin_cidrs),
                             target_tags=[tag], opts=opts)
    _ssh(gw.name, net, ranges, [tag], parent)
    prefix = gateway_prefix(project, stack, gw.name)
    token, token_version = _secret(f"{gw.name}-token", f"{prefix}-token", parent, apis)
    admin, admin_version = _secret(f"{gw.name}-admin-token", f"{prefix}-admin-token", parent, apis)
    joins = joins or {}
    # The controller reads the join token of each fleet it admits, nothing else of theirs.
    account = _account(f"{gw.name}-gw", [token, admin, *(joins[f] for f in sorted(joins))], parent, apis)
    runtime = require_runtime(gw.runtime, f"gateway {gw.name}")
    uploads = upload(handle.store, runtime, parent)
    _runtime_read(f"{gw.name}-gw", handle.store, [runtime], account, parent)
    # The controller resizes the stack's MIGs in the gateway's region (docs/cloud.md#node-group-sizing).
    sized = [g for g in node_groups or [] if g.region == gw.region]
    if sized:
        _sizer(gw, project, stack, sized, account, parent, apis)
    startup = pulumi.Output.all(handle.store.bucket.name, account.project).apply(
        lambda got: gateway_script(project, stack, gw, got[0], got[1], sorted(joins), sized=sized))
    assert gw.zone is not None  # placement picks one of the region's real zones
    address = gcp.compute.Address(gw.name, region=gw.region, address_type="EXTERNAL", opts=opts)
    gcp.compute.Instance(gw.name, machine_type=gw.instance_type, zone=gw.zone, tags=[tag],
                         boot_disk={"initialize_params": {"image": image(0, gw.arch)}},
                         network_interfaces=[{"subnetwork": subnet.id, "network_ip": GATEWAY_PRIVATE_IP,
                                              "access_configs": [{"nat_ip": address.address}]}],
                         metadata_startup_script=startup,
                         service_account={"email": account.email, "scopes": ["cloud-platform"]},
                         opts=pulumi.ResourceOptions(parent=parent, depends_on=[*apis, *uploads]))
    url = address.address.apply(lambda ip: f"http://{ip}")
    if gw.domain:
        dns = pulumi.ResourceOptions(parent=parent, depends_on=_apis(gw.name, (DNS_API,), parent))
        zone = gcp.dns.ManagedZone(gw.name, dns_name=f"{gw.domain}.", description=f"gpustack gateway {gw.name}", opts=dns)
        for label in ("", "*."):
            gcp.dns.RecordSet(f"{gw.name}-{'wildcard' if label else 'apex'}", managed_zone=zone.name, name=f"{label}{gw.domain}.",
                              type="A", ttl=60, rrdatas=[address.address], opts=opts)
        url = pulumi.Output.from_input(f"{'https' if gw.certificate else 'http'}://{gw.domain}")
    return CloudGateway(url=url, control_url=address.address.apply(lambda ip: f"http://{ip}:{CONTROL_PORT}"),
                      token=token_version.secret_data, admin_token=admin_version.secret_data)
