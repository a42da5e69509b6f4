"""Scale replica groups that run as Kubernetes Deployments, through the scale subresource.

On the kubernetes backend a replica group is a Deployment whose `spec.replicas` Pulumi ignores;
the autoscaler's decisions land here. The client is lightkube: typed models for the two calls we
make, an asyncio client that fits the controller's event loop, in-cluster service-account
configuration built in, and a small dependency set (httpx, msgspec) next to the official
`kubernetes` client's generated package and thread pools; kr8s is comparable but reaches for
kubectl-style conveniences we do not need. The controller's RBAC (backends/kubernetes/resources.py) allows
exactly get/patch on `deployments/scale` for these Deployments.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.autoscaling_v1 import Scale
from lightkube.resources.apps_v1 import Deployment

from gpustack_iac.errors import GpustackError


@dataclass(frozen=True)
class ScaleState:
    desired: int  # spec.replicas
    current: int  # status.replicas (pods that exist, ready or not)


def in_cluster() -> KubeConfig:
    return KubeConfig.from_service_account()


def from_token(server: str, token: str, namespace: str, ca_file: str | None = None) -> KubeConfig:
    """A configuration for an API server and a bearer token (tests; controllers outside the cluster)."""
    cluster: dict[str, object] = {"server": server}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    return KubeConfig.from_dict({
        "clusters": [{"name": "c", "cluster": cluster}], "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
        "current-context": "c"})


def _state(scale: Scale) -> ScaleState:
    # The API server always answers a scale subresource with its spec and status.
    assert scale.spec is not None and scale.status is not None, f"a Scale without spec or status: {scale}"
    return ScaleState(desired=scale.spec.replicas or 0, current=scale.status.replicas or 0)


class DeploymentScaler:
    """Reads and sets the replica count of named Deployments in one namespace."""

    def __init__(self, config: KubeConfig, namespace: str, timeout: float = 10.0) -> None:
        # lightkube annotates an httpx Timeout (httpx or httpx2, by version) and hands it to httpx,
        # which takes seconds as well.
        self._client = AsyncClient(config, namespace=namespace, timeout=timeout,  # type: ignore[arg-type]
                                   field_manager="gpustack-controller")
        self.namespace = namespace

    async def get(self, name: str) -> ScaleState:
        try:
            scale = await self._client.get(Deployment.Scale, name, namespace=self.namespace)
        except ApiError as exc:
            raise GpustackError(f"kubernetes: cannot read the scale of deployment {self.namespace}/{name}: "
                                f"{exc.status.message}") from None
        return _state(scale)

    async def scale(self, name: str, replicas: int) -> ScaleState:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        try:
            scale = await self._client.patch(Deployment.Scale, name, {"spec": {"replicas": replicas}},
                                             namespace=self.namespace)
        except ApiError as exc:
            raise GpustackError(f"kubernetes: cannot scale deployment {self.namespace}/{name} to {replicas}: "
                                f"{exc.status.message}") from None
        return _state(scale)

    # The NodeGroupScaler protocol (runtime/scaling/nodegroups.py): a Deployment is the node group.
    async def get_size(self, name: str) -> int:
        return (await self.get(name)).desired

    async def set_size(self, name: str, size: int) -> int:
        return (await self.scale(name, size)).desired

    async def close(self) -> None:
        await self._client.close()
