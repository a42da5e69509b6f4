"""Azure resources for a fleet's node groups and a gateway, declared with pulumi-azure-native.

A node group is a virtual machine scale set (Spot priority for spot groups); the controller owns
its capacity (Pulumi ignores it). Tokens live in Key Vault; instances read them with their
user-assigned managed identity, which holds "Key Vault Secrets User" on that vault only.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field

import pulumi
import pulumi_azure_native as az
import pulumi_tls as tls

from gpustack_iac.backends.azure.boot import CONTAINER, gateway_script, node_script
from gpustack_iac.backends.cloud import (AGENT_PORT, CONTROL_PORT, GATEWAY_PORTS, GATEWAY_PRIVATE_IP, VPC_CIDR, CloudGateway,
                                          GatewayInstance, Network, NodeGroup, new_token, require_runtime, upload_once)
from gpustack_iac.providers.runtime_bundle import CloudRuntime, RuntimeObject

# Ubuntu 24.04 images (Python 3.12, what the pinned runtime is built for), "latest" per region.
# GPU nodes: the Ubuntu HPC image (NVIDIA driver, CUDA, InfiniBand drivers); Azure has no arm64 GPU sizes.
GPU_IMAGES = {"x86_64": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2404", "version": "latest"}}
CPU_IMAGES = {"x86_64": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
              "aarch64": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server-arm64", "version": "latest"}}
# Built-in role "Key Vault Secrets User": read secret values, nothing else.
SECRETS_USER_ROLE = "/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"
# Built-in role "Storage Blob Data Reader", narrowed by a condition to the runtime's prefix.
BLOB_READER_ROLE = "/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
ADMIN = "gpustack"


def image(gpus: int, arch: str) -> dict[str, str]:
    table = GPU_IMAGES if gpus else CPU_IMAGES
    if arch not in table:
        raise ValueError(f"azure has no {'GPU ' if gpus else ''}Ubuntu 24.04 image for {arch}")
    return table[arch]


@dataclass
class AzureStore:
    """The stack's own storage account and private container for the pinned runtime."""

    group: az.resources.ResourceGroup
    account: az.storage.StorageAccount
    container: az.storage.BlobContainer
    objects: dict[str, pulumi.Resource] = field(default_factory=dict)


def store(name: str, region: str, group: az.resources.ResourceGroup, parent: pulumi.Resource) -> AzureStore:
    opts = pulumi.ResourceOptions(parent=parent)
    # Storage account names are global, 3-24 lowercase letters and digits: one from the stack and network.
    unique = hashlib.sha256(f"{pulumi.get_project()}/{pulumi.get_stack()}/{name}".encode()).hexdigest()[:20]
    account = az.storage.StorageAccount(f"{name}-runtime", account_name=f"gsrt{unique}", resource_group_name=group.name,
                                        location=region, kind="StorageV2", sku={"name": "Standard_LRS"},
                                        allow_blob_public_access=False, minimum_tls_version="TLS1_2",
                                        enable_https_traffic_only=True, opts=opts)
    container = az.storage.BlobContainer(f"{name}-runtime", account_name=account.name, resource_group_name=group.name,
                                         container_name=CONTAINER, public_access="None", opts=opts)
    return AzureStore(group=group, account=account, container=container)


def upload(bucket: AzureStore, runtime: CloudRuntime, parent: pulumi.Resource) -> list[pulumi.Resource]:
    def declare(name: str, obj: RuntimeObject) -> pulumi.Resource:
        source = pulumi.FileAsset(str(obj.path)) if obj.path is not None else pulumi.StringAsset(obj.data.decode())
        return az.storage.Blob(name, account_name=bucket.account.name, container_name=bucket.container.name,
                               resource_group_name=bucket.group.name, blob_name=obj.key, type="Block", source=source,
                               metadata={"sha256": obj.sha256}, content_type="application/octet-stream",
                               opts=pulumi.ResourceOptions(parent=parent))
    return upload_once(bucket.objects, runtime, declare)


def _runtime_read(name: str, bucket: AzureStore, runtimes: list[CloudRuntime],
                  identity: az.managedidentity.UserAssignedIdentity, parent: pulumi.Resource) -> None:
    """Blob read on the runtime's container, narrowed by a condition to exactly these prefixes."""
    prefixes = sorted({r.bundle.prefix for r in runtimes})
    path = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]"
    allowed = " OR ".join(f"{path} StringStartsWith '{p}/'" for p in prefixes)
    condition = ("((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})) OR "
                 f"({allowed}))")
    az.authorization.RoleAssignment(f"{name}-runtime", scope=bucket.container.id, role_definition_id=BLOB_READER_ROLE,
                                    principal_id=identity.principal_id, principal_type="ServicePrincipal",
                                    condition=condition, condition_version="2.0", opts=pulumi.ResourceOptions(parent=parent))


@dataclass
class AzureNetwork:
    group: az.resources.ResourceGroup
    subnet: az.network.Subnet
    region: str
    store: AzureStore  # the runtime's storage account, one per network


@dataclass
class _Base:
    group: az.resources.ResourceGroup
    subnet: az.network.Subnet
    store: AzureStore
    nsg: az.network.NetworkSecurityGroup  # attached to the NICs, so fleets and the gateway share a subnet
    vault: az.keyvault.Vault
    identity: az.managedidentity.UserAssignedIdentity


def network(name: str, region: str, parent: pulumi.Resource) -> AzureNetwork:
    opts = pulumi.ResourceOptions(parent=parent)
    group = az.resources.ResourceGroup(name, location=region, opts=opts)
    vnet = az.network.VirtualNetwork(name, resource_group_name=group.name, location=region,
                                     address_space={"address_prefixes": [VPC_CIDR]}, opts=opts)
    subnet = az.network.Subnet(name, resource_group_name=group.name, virtual_network_name=vnet.name,
                               address_prefix="10.60.0.0/20", opts=opts)
    return AzureNetwork(group=group, subnet=subnet, region=region, store=store(name, region, group, parent))


def _base(name: str, region: str, nsg: list[dict[str, object]], parent: pulumi.Resource,
          shared: AzureNetwork | None) -> _Base:
    opts = pulumi.ResourceOptions(parent=parent)
    net = shared or network(name, region, parent)
    group = net.group
    sg = az.network.NetworkSecurityGroup(name, resource_group_name=group.name, location=region, security_rules=nsg, opts=opts)
    identity = az.managedidentity.UserAssignedIdentity(name, resource_group_name=group.name, location=region, opts=opts)
    vault = az.keyvault.Vault(name, resource_group_name=group.name, location=region, properties={
        "tenant_id": _tenant_id(),
        "sku": {"family": "A", "name": "standard"}, "enable_rbac_authorization": True}, opts=opts)
    az.authorization.RoleAssignment(name, scope=vault.id, role_definition_id=SECRETS_USER_ROLE,
                                    principal_id=identity.principal_id, principal_type="ServicePrincipal", opts=opts)
    return _Base(group=group, subnet=net.subnet, store=net.store, nsg=sg, vault=vault, identity=identity)


def _tenant_id() -> pulumi.Input[str]:
    """The directory the vault trusts: the one configured for the provider (Pulumi config, or the
    ARM_/AZURE_TENANT_ID the provider itself reads), else the signed-in client's own (an invoke the
    Pulumi CLI answers; the embedded engine names --engine pulumi). Never a made-up tenant."""
    configured = (pulumi.Config("azure-native").get("tenantId") or os.environ.get("ARM_TENANT_ID")
                  or os.environ.get("AZURE_TENANT_ID"))
    if configured:
        return configured
    return az.authorization.get_client_config_output().tenant_id


def _ssh_key(name: str, parent: pulumi.Resource) -> tls.PrivateKey:
    """The admin user's SSH key (Azure rejects password login switched off without one). The
    private half is a secret in state, for break-glass access; `ssh_from` decides who may reach 22."""
    return tls.PrivateKey(f"{name}-ssh", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=parent))


def _linux(key: tls.PrivateKey, **extra: object) -> dict[str, object]:
    return {"disable_password_authentication": True, **extra,
            "ssh": {"public_keys": [{"path": f"/home/{ADMIN}/.ssh/authorized_keys", "key_data": key.public_key_openssh}]}}


def _rule(name: str, priority: int, port: int, sources: list[str]) -> dict[str, object]:
    return {"name": name, "priority": priority, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
            "source_port_range": "*", "destination_port_range": str(port), "destination_address_prefix": "*",
            "source_address_prefixes": sources}


def _secret(name: str, secret_name: str, base: _Base, parent: pulumi.Resource) -> az.keyvault.Secret:
    return az.keyvault.Secret(name, resource_group_name=base.group.name, vault_name=base.vault.name, secret_name=secret_name,
                              # The whole properties object is secret, so the value is encrypted in state.
                              properties=new_token().apply(lambda t: {"value": t}),
                              opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["properties.value"]))


def node_groups(fleet: str, groups: list[NodeGroup], ranges: Network, project: str, stack: str,
                parent: pulumi.Resource, shared: AzureNetwork | None = None) -> "AzureFleet":
    region = groups[0].region
    rules = [_rule("agent", 100, AGENT_PORT, [VPC_CIDR])]
    if ranges.admin_cidrs:
        rules.append(_rule("ssh", 110, 22, list(ranges.admin_cidrs)))
    base = _base(fleet, region, rules, parent, shared)
    _secret(f"{fleet}-agent-token", "agent-token", base, parent)
    _secret(f"{fleet}-join-token", "join-token", base, parent)
    key = _ssh_key(fleet, parent)
    runtimes = [require_runtime(g.runtime, f"node group {g.name}") for g in groups]
    uploads = [o for r in runtimes for o in upload(base.store, r, parent)]
    _runtime_read(f"{fleet}-node", base.store, runtimes, base.identity, parent)
    out = []
    for group in groups:
        def boot(got: list[str], g: NodeGroup = group) -> str:
            vault, account, client_id = got
            return base64.b64encode(node_script(g, vault, account, client_id).encode()).decode()

        user_data = pulumi.Output.all(base.vault.name, base.store.account.name, base.identity.client_id).apply(boot)
        spot: dict[str, object] = {}
        if group.spot:
            spot = {"priority": "Spot", "eviction_policy": "Delete",
                    "billing_profile": {"max_price": group.max_price if group.max_price is not None else -1}}
        out.append(az.compute.VirtualMachineScaleSet(
            # Named as its group (unique in the stack's resource group): the controller sets its
            # capacity by name and its agents join with that name as their node group.
            group.name, vm_scale_set_name=group.name, resource_group_name=base.group.name, location=region,
            sku={"name": group.instance_types[0], "capacity": group.min_size, "tier": "Standard"},
            orchestration_mode="Uniform", upgrade_policy={"mode": "Manual"}, overprovision=False,
            identity={"type": "UserAssigned", "user_assigned_identities": [base.identity.id]},
            virtual_machine_profile={
                "storage_profile": {"image_reference": image(group.gpu_count, group.arch),
                                    "os_disk": {"create_option": "FromImage", "disk_size_gb": group.disk_gb,
                                                "managed_disk": {"storage_account_type": "Premium_LRS"}}},
                "os_profile": {"computer_name_prefix": group.name[:9], "admin_username": ADMIN,
                               "linux_configuration": _linux(key, provision_vm_agent=True)},
                "user_data": user_data,
                "network_profile": {"network_interface_configurations": [{
                    "name": group.name, "primary": True, "network_security_group": {"id": base.nsg.id},
                    "ip_configurations": [{"name": group.name, "subnet": {"id": base.subnet.id},
                                           # Basic SKU public IPs are retired: Standard, per instance.
                                           "public_ip_address_configuration": {"name": group.name,
                                                                               "sku": {"name": "Standard", "tier": "Regional"}}}]}]},
                **spot,
            },
            tags=group.labels,
            # The controller sets the capacity between the fleet's bounds; Pulumi must not reset it.
            # Nodes boot once their runtime is in the container.
            opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["sku.capacity"], depends_on=uploads)))
    return AzureFleet(groups=out, join_secret=base.vault)


@dataclass
class AzureFleet:
    groups: list[az.compute.VirtualMachineScaleSet]
    join_secret: az.keyvault.Vault  # the vault holding the join token; the gateway's identity may read it


# "Virtual Machine Contributor": read a scale set, change its capacity, list and delete its VMs
# (runtime/scaling/azure.py), assigned on each scale set the controller sizes and nothing else.
VM_CONTRIBUTOR_ROLE = "/providers/Microsoft.Authorization/roleDefinitions/9980e02c-c2be-4d73-94e8-173b1dc7cf3c"


def gateway(gw: GatewayInstance, ranges: Network, project: str, stack: str, parent: pulumi.Resource,
            shared: AzureNetwork | None = None, joins: dict[str, az.keyvault.Vault] | None = None,
            node_groups: list[NodeGroup] | None = None,
            scale_sets: list[az.compute.VirtualMachineScaleSet] | None = None) -> CloudGateway:
    opts = pulumi.ResourceOptions(parent=parent)
    rules = [_rule(f"gateway-{p}", 100 + i, p, ["*"]) for i, p in enumerate(GATEWAY_PORTS)]
    # Agents in the network join through the control API (the join token guards it).
    rules.append(_rule("join", 115, CONTROL_PORT, [VPC_CIDR]))
    if ranges.admin_cidrs:
        rules += [_rule("control", 120, CONTROL_PORT, list(ranges.admin_cidrs)), _rule("ssh", 130, 22, list(ranges.admin_cidrs))]
    base = _base(gw.name, gw.region, rules, parent, shared)
    token = _secret(f"{gw.name}-token", "token", base, parent)
    admin = _secret(f"{gw.name}-admin-token", "admin-token", base, parent)
    joins = joins or {}
    fleets = sorted(joins)
    for fleet in fleets:
        # The controller reads each fleet's join token: "Key Vault Secrets User" on that vault.
        az.authorization.RoleAssignment(f"{gw.name}-join-{fleet}", scope=joins[fleet].id, role_definition_id=SECRETS_USER_ROLE,
                                        principal_id=base.identity.principal_id, principal_type="ServicePrincipal", opts=opts)
    ip = az.network.PublicIPAddress(gw.name, resource_group_name=base.group.name, location=gw.region,
                                    public_ip_allocation_method="Static", sku={"name": "Standard"}, opts=opts)
    nic = az.network.NetworkInterface(gw.name, resource_group_name=base.group.name, location=gw.region,
                                      network_security_group={"id": base.nsg.id}, ip_configurations=[
        {"name": gw.name, "subnet": {"id": base.subnet.id}, "public_ip_address": {"id": ip.id},
         # A fixed address: the nodes' user data names the controller (CONTROLLER_URL).
         "private_ip_allocation_method": "Static", "private_ip_address": GATEWAY_PRIVATE_IP}], opts=opts)

    runtime = require_runtime(gw.runtime, f"gateway {gw.name}")
    uploads = upload(base.store, runtime, parent)
    _runtime_read(f"{gw.name}-gw", base.store, [runtime], base.identity, parent)
    # The controller sizes the scale sets of the gateway's region: they share its network's resource group.
    # (node_groups and scale_sets come in the same order, one scale set per group.)
    pairs = list(zip(node_groups or [], scale_sets or [], strict=True))
    sized = [g for g, _ in pairs if g.region == gw.region and shared is not None]
    for group, vmss in pairs:
        if group in sized:
            az.authorization.RoleAssignment(f"{gw.name}-size-{group.name}", scope=vmss.id, role_definition_id=VM_CONTRIBUTOR_ROLE,
                                            principal_id=base.identity.principal_id, principal_type="ServicePrincipal",
                                            opts=opts)

    def boot(got: list[str]) -> str:
        own, account, client_id, group_id, vaults = got[0], got[1], got[2], got[3], dict(zip(fleets, got[4:]))
        return base64.b64encode(gateway_script(gw, own, account, client_id, vaults, sized=sized,
                                               resource_group=group_id).encode()).decode()

    user_data = pulumi.Output.all(base.vault.name, base.store.account.name, base.identity.client_id, base.group.id,
                                  *(joins[f].name for f in fleets)).apply(boot)
    az.compute.VirtualMachine(
        gw.name, resource_group_name=base.group.name, location=gw.region, hardware_profile={"vm_size": gw.instance_type},
        identity={"type": "UserAssigned", "user_assigned_identities": [base.identity.id]},
        storage_profile={"image_reference": image(0, gw.arch), "os_disk": {"create_option": "FromImage"}},
        os_profile={"computer_name": gw.name, "admin_username": ADMIN, "linux_configuration": _linux(_ssh_key(gw.name, parent))},
        network_profile={"network_interfaces": [{"id": nic.id, "primary": True}]}, user_data=user_data,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=uploads))
    url = ip.ip_address.apply(lambda a: f"http://{a}")
    if gw.domain:
        zone = az.dns.Zone(gw.name, resource_group_name=base.group.name, zone_name=gw.domain, location="global", opts=opts)
        for label in ("@", "*"):
            az.dns.RecordSet(f"{gw.name}-{'apex' if label == '@' else 'wildcard'}", resource_group_name=base.group.name,
                             zone_name=zone.name, relative_record_set_name=label, record_type="A", ttl=60,
                             a_records=[{"ipv4_address": ip.ip_address}], opts=opts)
        url = pulumi.Output.from_input(f"{'https' if gw.certificate else 'http'}://{gw.domain}")
    return CloudGateway(url=url, control_url=ip.ip_address.apply(lambda a: f"http://{a}:{CONTROL_PORT}"),
                        token=token.properties.apply(lambda p: p.value),
                        admin_token=admin.properties.apply(lambda p: p.value))
