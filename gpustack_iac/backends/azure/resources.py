"""Azure resources for a fleet's node groups and a gateway, declared with pulumi-azure-native.

A node group is a virtual machine scale set (Spot priority for spot groups); the controller owns
its capacity (Pulumi ignores it). Tokens live in Key Vault; instances read them with their
user-assigned managed identity, which holds "Key Vault Secrets User" on that vault only.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, replace

import pulumi
import pulumi_azure_native as az
import pulumi_tls as tls

from gpustack_iac.backends.cloud import (AGENT_PORT, CONTROL_PORT, GATEWAY_PORTS, GATEWAY_PRIVATE_IP, JOIN_DIR, VPC_CIDR,
                                          AgentJoin, CloudGateway, GatewayInstance, Network, NodeGroup, agent_boot, gateway_boot,
                                          new_token)

# Ubuntu HPC images carry the NVIDIA driver, CUDA and InfiniBand drivers; "latest" per region.
GPU_IMAGE = {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204", "version": "latest"}
CPU_IMAGE = {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}
# Built-in role "Key Vault Secrets User": read secret values, nothing else.
SECRETS_USER_ROLE = "/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"
ADMIN = "gpustack"



@dataclass
class AzureNetwork:
    group: az.resources.ResourceGroup
    subnet: az.network.Subnet
    region: str


@dataclass
class _Base:
    group: az.resources.ResourceGroup
    subnet: az.network.Subnet
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
    return AzureNetwork(group=group, subnet=subnet, region=region)


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
    return _Base(group=group, subnet=net.subnet, nsg=sg, vault=vault, identity=identity)


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


def _fetch(vault: str, secret: str) -> str:
    # The instance signs in as its managed identity; no credential is written to the instance.
    return (f"az login --identity >/dev/null && az keyvault secret show --vault-name {vault} --name {secret} "
            "--query value -o tsv")


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
    out = []
    for group in groups:
        join = AgentJoin("", fleet, group.name, labels=(("backend", "azure"), ("region", region), ("spot", str(group.spot).lower())))
        user_data = base.vault.name.apply(lambda v, j=join: base64.b64encode(agent_boot(
            _fetch(v, "agent-token"), join=replace(j, fetch_join_token=_fetch(v, "join-token"))).encode()).decode())
        spot: dict[str, object] = {}
        if group.spot:
            spot = {"priority": "Spot", "eviction_policy": "Delete",
                    "billing_profile": {"max_price": group.max_price if group.max_price is not None else -1}}
        out.append(az.compute.VirtualMachineScaleSet(
            group.name, resource_group_name=base.group.name, location=region,
            sku={"name": group.instance_types[0], "capacity": group.min_size, "tier": "Standard"},
            orchestration_mode="Uniform", upgrade_policy={"mode": "Manual"}, overprovision=False,
            identity={"type": "UserAssigned", "user_assigned_identities": [base.identity.id]},
            virtual_machine_profile={
                "storage_profile": {"image_reference": GPU_IMAGE if group.gpu_count else CPU_IMAGE,
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
            opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["sku.capacity"])))
    return AzureFleet(groups=out, join_secret=base.vault)


@dataclass
class AzureFleet:
    groups: list[az.compute.VirtualMachineScaleSet]
    join_secret: az.keyvault.Vault  # the vault holding the join token; the gateway's identity may read it


def gateway(gw: GatewayInstance, ranges: Network, project: str, stack: str, parent: pulumi.Resource,
            shared: AzureNetwork | None = None, joins: dict[str, az.keyvault.Vault] | None = None) -> CloudGateway:
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

    def boot(names: list[str]) -> str:
        own, vaults = names[0], dict(zip(fleets, names[1:]))
        fetch_joins = "; ".join(f"{_fetch(vaults[f], 'join-token')} > {JOIN_DIR}/.new && mv {JOIN_DIR}/.new {JOIN_DIR}/{f}.token"
                                for f in fleets)
        return base64.b64encode(gateway_boot(_fetch(own, "token"), _fetch(own, "admin-token"), gw,
                                             fetch_join_tokens=fetch_joins or None).encode()).decode()

    user_data = pulumi.Output.all(base.vault.name, *(joins[f].name for f in fleets)).apply(boot)
    az.compute.VirtualMachine(
        gw.name, resource_group_name=base.group.name, location=gw.region, hardware_profile={"vm_size": gw.instance_type},
        identity={"type": "UserAssigned", "user_assigned_identities": [base.identity.id]},
        storage_profile={"image_reference": CPU_IMAGE, "os_disk": {"create_option": "FromImage"}},
        os_profile={"computer_name": gw.name, "admin_username": ADMIN, "linux_configuration": _linux(_ssh_key(gw.name, parent))},
        network_profile={"network_interfaces": [{"id": nic.id, "primary": True}]}, user_data=user_data, opts=opts)
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
