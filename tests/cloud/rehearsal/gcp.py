"""The GCP side of the boot rehearsal: the runtime in gcp-storage-emulator's bucket, the tokens in
the Secret Manager stand-in (metadata.py), the boot scripts rendered against both and the metadata
stub. The controller does not size GCP groups yet, so the gateway gets no node groups."""

from __future__ import annotations

import dataclasses
import secrets
import urllib.parse
import urllib.request
from dataclasses import dataclass

from gpustack_iac.providers.cloudboot import BootSource, Endpoints, GatewayBoot, NodeJoin, gateway_boot, node_boot
from gpustack_iac.providers.runtime_bundle import RuntimeBundle
from gpustack_iac.providers.wheelhouse import Wheelhouse
from tests.cloud.rehearsal.harness import AGENT_PORT, GATEWAY_ARGS
from tests.cloud.rehearsal.metadata import MetadataStub

PROJECT = "rehearsal-project"
BUCKET = "gpustack-rehearsal-runtime"
PREFIX = "gpustack-rehearsal-dev-"  # Secret Manager ids are flat: the stack's prefix, then the name


@dataclass
class GcpWorld:
    storage: str
    metadata: MetadataStub
    tokens: dict[str, str]  # secret id -> value

    def source(self, bundle: RuntimeBundle) -> BootSource:
        ep = Endpoints(metadata=self.metadata.url, storage=self.storage, secrets=self.metadata.url)
        return BootSource(cloud="gcp", region="us-central1", bucket=BUCKET, bundle=bundle, project=PROJECT, endpoints=ep)

    @property
    def token(self) -> str:
        return self.tokens[PREFIX + "gateway-token"]

    @property
    def admin_token(self) -> str:
        return self.tokens[PREFIX + "gateway-admin-token"]


def upload(storage: str, bundle: RuntimeBundle, house: Wheelhouse, tamper: str | None = None) -> RuntimeBundle:
    target = dataclasses.replace(bundle, version=bundle.version + "-tampered") if tamper else bundle
    for obj in target.objects(house.path):
        data = obj.data if obj.path is None else obj.path.read_bytes()
        if tamper and obj.path is not None and obj.path.name.startswith(tamper):
            data = data[:-64] + bytes(64)
        url = f"{storage}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={urllib.parse.quote(obj.key, safe='')}"
        req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(req, timeout=30).close()
    return target


def create_world(storage: str, metadata: MetadataStub) -> GcpWorld:
    tokens = {PREFIX + n: secrets.token_urlsafe(24) for n in
              ("gateway-token", "gateway-admin-token", "fleet-gpu-agent-token", "join-gpu")}
    for name, value in tokens.items():
        metadata.identity.gcp_secrets[f"projects/{PROJECT}/secrets/{name}"] = value
    return GcpWorld(storage, metadata, tokens)


def gateway_script(world: GcpWorld, bundle: RuntimeBundle) -> str:
    gw = GatewayBoot(token_secret=PREFIX + "gateway-token", admin_token_secret=PREFIX + "gateway-admin-token",
                     args=GATEWAY_ARGS, joins_path=PREFIX + "join-")
    return gateway_boot(world.source(bundle), gw)


def node_script(world: GcpWorld, bundle: RuntimeBundle, controller: str) -> str:
    join = NodeJoin(agent_token_secret=PREFIX + "fleet-gpu-agent-token", join_token_secret=PREFIX + "join-gpu",
                    fleet="gpu", node_group="gpustack-rehearsal-dev-gpu", controller_url=controller,
                    agent_port=AGENT_PORT, labels=(("backend", "gcp"), ("region", "us-central1")))
    return node_boot(world.source(bundle), join)
