"""The GCP side of the boot rehearsal: the runtime in gcp-storage-emulator's bucket, the tokens in
the Secret Manager stand-in (metadata.py), and the startup scripts the GCP backend renders
(backends/gcp/boot.py) pointed at both and the metadata stub. The regional MIG lives in the Compute
stand-in (tests/support/group_standin.py), which answers only the metadata stub's token: the
gateway's controller resizes it with the instance's own identity, as on a real gateway."""

from __future__ import annotations

import secrets
import urllib.parse
import urllib.request

from gpustack_iac.backends.gcp import boot
from gpustack_iac.providers.cloudboot import Endpoints
from gpustack_iac.providers.runtime_bundle import CloudRuntime
from tests.cloud.rehearsal.harness import PROJECT, STACK, World, gateway_instance, node_group, tampered
from tests.cloud.rehearsal.metadata import MetadataStub
from tests.support.group_standin import Group, StandIn

GCP_PROJECT = "rehearsal-project"
REGION = "us-central1"
BUCKET = "gpustack-rehearsal-runtime"
MIG = f"/compute/v1/projects/{GCP_PROJECT}/regions/{REGION}/instanceGroupManagers"  # the stand-in's path


class GcpWorld(World):
    cloud = "gcp"
    sizes_groups = True

    def __init__(self, storage: str, metadata: MetadataStub, compute: StandIn, compute_url: str) -> None:
        self.storage, self.metadata, self.compute = storage, metadata, compute
        self.endpoints = Endpoints(metadata=metadata.url, storage=storage, secrets=metadata.url, api=compute_url)
        self.mig = boot.mig_name(PROJECT, STACK, node_group("gpu", REGION))
        compute.groups[self.mig] = Group(1)  # as `up` leaves it: the controller owns the size from here
        gw = boot.gateway_prefix(PROJECT, STACK, "gw")
        names = {"token": f"{gw}-token", "admin": f"{gw}-admin-token", "join": boot.join_secret_id(PROJECT, STACK, "gpu"),
                 "agent": boot.agent_secret_id(PROJECT, STACK, "gpu")}
        self.tokens = {k: secrets.token_urlsafe(24) for k in names}
        for key, name in names.items():
            metadata.identity.gcp_secrets[f"projects/{GCP_PROJECT}/secrets/{name}"] = self.tokens[key]

    def upload(self, runtime: CloudRuntime, tamper: str | None = None) -> CloudRuntime:
        target = tampered(runtime, tamper)
        for key, data in self.objects(target, tamper):
            url = f"{self.storage}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={urllib.parse.quote(key, safe='')}"
            req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/octet-stream"})
            urllib.request.urlopen(req, timeout=30).close()
        return target

    def gateway_script(self, runtime: CloudRuntime) -> str:
        return boot.gateway_script(PROJECT, STACK, gateway_instance(REGION, runtime), BUCKET, GCP_PROJECT, ["gpu"],
                                   self.endpoints, sized=[node_group("gpu", REGION, runtime)])

    def node_script(self, runtime: CloudRuntime, controller: str) -> str:
        return boot.node_script(PROJECT, STACK, node_group("gpu", REGION, runtime), BUCKET, GCP_PROJECT, self.endpoints,
                                controller)

    def group_size(self) -> int:
        return self.compute.groups[self.mig].size

    def set_group_size(self, n: int) -> None:
        self.compute.groups[self.mig].size = n
