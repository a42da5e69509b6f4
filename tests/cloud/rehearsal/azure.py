"""The Azure side of the boot rehearsal: the runtime in Azurite's Blob service (HTTPS with a
certificate made here, `--oauth basic`, so the instance's bearer tokens are checked for audience,
issuer and lifetime), the tokens in the Key Vault stand-in and the managed identity's tokens from
the IMDS stand-in (metadata.py), and the custom data the Azure backend renders
(backends/azure/boot.py) pointed at them. The scale set lives in the ARM stand-in
(tests/support/group_standin.py), which takes only a management token the IMDS stub issued: the
gateway's controller sets its capacity as the managed identity, as on a real gateway."""

from __future__ import annotations

import secrets

from azure.storage.blob import BlobServiceClient

from gpustack_iac.backends.azure import boot
from gpustack_iac.providers.cloudboot import Endpoints
from gpustack_iac.providers.runtime_bundle import CloudRuntime
from tests.cloud.rehearsal.harness import World, gateway_instance, node_group, tampered
from tests.cloud.rehearsal.metadata import MetadataStub
from tests.support.group_standin import Group, StandIn

REGION = "eastus"
ACCOUNT = "devstoreaccount1"  # Azurite's account and its published development key
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
GATEWAY_VAULT, FLEET_VAULT = "gw-kv", "gpu-kv"
SUBSCRIPTION, RESOURCE_GROUP = "00000000-0000-0000-0000-0000000000bb", "rehearsal-dev"
GROUP_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
VMSS = f"{GROUP_ID}/providers/Microsoft.Compute/virtualMachineScaleSets"  # the stand-in's path


class AzureWorld(World):
    cloud = "azure"
    sizes_groups = True

    def __init__(self, blob: str, ca_file: str, metadata: MetadataStub, arm: StandIn, arm_url: str) -> None:
        self.metadata, self.ca_file, self.arm = metadata, ca_file, arm
        # The instance trusts Azurite's certificate as it trusts Azure's: through the CA bundle.
        self.boot_env = {"SSL_CERT_FILE": ca_file}
        self.endpoints = Endpoints(metadata=metadata.url, storage=blob, secrets=f"{metadata.url}/keyvault/{{vault}}",
                                   api=arm_url)
        self.vmss = node_group("gpu", REGION).name  # a scale set is named as its group
        arm.groups[self.vmss] = Group(1)  # as `up` leaves it: the controller owns the capacity from here
        self.client_id = metadata.identity.azure_client_id
        names = {"token": f"{GATEWAY_VAULT}/token", "admin": f"{GATEWAY_VAULT}/admin-token",
                 "join": f"{FLEET_VAULT}/join-token", "agent": f"{FLEET_VAULT}/agent-token"}
        self.tokens = {k: secrets.token_urlsafe(24) for k in names}
        for key, name in names.items():
            metadata.identity.azure_secrets[name] = self.tokens[key]
        self.service = BlobServiceClient(blob, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                                         connection_verify=ca_file)
        self.service.create_container(boot.CONTAINER)

    def upload(self, runtime: CloudRuntime, tamper: str | None = None) -> CloudRuntime:
        target = tampered(runtime, tamper)
        container = self.service.get_container_client(boot.CONTAINER)
        for key, data in self.objects(target, tamper):
            container.upload_blob(key, data, overwrite=True)
        return target

    def gateway_script(self, runtime: CloudRuntime) -> str:
        return boot.gateway_script(gateway_instance(REGION, runtime), GATEWAY_VAULT, ACCOUNT, self.client_id,
                                   {"gpu": FLEET_VAULT}, self.endpoints, sized=[node_group("gpu", REGION, runtime)],
                                   resource_group=GROUP_ID)

    def node_script(self, runtime: CloudRuntime, controller: str) -> str:
        return boot.node_script(node_group("gpu", REGION, runtime), FLEET_VAULT, ACCOUNT, self.client_id, self.endpoints,
                                controller)

    def group_size(self) -> int:
        return self.arm.groups[self.vmss].size

    def set_group_size(self, n: int) -> None:
        self.arm.groups[self.vmss].size = n
