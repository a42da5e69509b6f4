"""Size Azure virtual machine scale sets (a fleet's Uniform VMSS) through the ARM REST API.

Calls (Microsoft.Compute, api-version `API_VERSION`): `GET` the scale set for `sku.capacity`,
`PATCH` its capacity to grow, list its VMs and `POST .../delete` with one instance id to remove a
named (drained) instance, which also lowers the capacity by one, so the scale set neither
replaces it nor picks another VM. Plain authenticated REST with the gateway's managed identity
(rest.py says why not the SDK); the identity's role covers the stack's resource group only.
"""

from __future__ import annotations

from typing import Any

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.scaling.rest import MetadataToken, RestClient

API = "https://management.azure.com"
API_VERSION = "2024-07-01"


class VmssScaler:
    """A `CloudGroupScaler` over the scale sets of one resource group."""

    def __init__(self, client: RestClient, subscription: str, resource_group: str, api: str = API) -> None:
        self._client = client
        self._base = (f"{api.rstrip('/')}/subscriptions/{subscription}/resourceGroups/{resource_group}"
                      "/providers/Microsoft.Compute/virtualMachineScaleSets")

    @classmethod
    def from_metadata(cls, subscription: str, resource_group: str, metadata: str | None = None, api: str | None = None,
                      client_id: str | None = None) -> "VmssScaler":
        token = MetadataToken.azure(metadata, client_id=client_id) if metadata else MetadataToken.azure(client_id=client_id)
        return cls(RestClient("azure", token), subscription, resource_group, api or API)

    def _url(self, name: str, tail: str = "") -> str:
        return f"{self._base}/{name}{tail}?api-version={API_VERSION}"

    async def get_size(self, name: str) -> int:
        vmss = await self._client.call("GET", self._url(name), what=f"read scale set {name}")
        return int(vmss["sku"]["capacity"])

    async def set_size(self, name: str, size: int) -> int:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        await self._client.call("PATCH", self._url(name), {"sku": {"capacity": size}},
                                what=f"set scale set {name} to {size}")
        return size

    async def remove_node(self, name: str, instance: str) -> int:
        instance_id = await self._instance_id(name, instance)
        await self._client.call("POST", self._url(name, "/delete"), {"instanceIds": [instance_id]},
                                what=f"delete instance {instance} of scale set {name}")
        return await self.get_size(name)

    async def launch_errors(self, name: str) -> list[str]:
        """Nothing to read afterwards: ARM refuses a capacity change it cannot meet (SkuNotAvailable,
        quota) in the PATCH's own answer, which set_size raises and the sizer reads."""
        return []

    async def _instance_id(self, name: str, instance: str) -> str:
        """The scale set's instance id of the VM whose computer name (the agent's name) is `instance`."""
        url: str | None = self._url(name, "/virtualMachines")
        while url:
            page: dict[str, Any] = await self._client.call("GET", url, what=f"list scale set {name}") or {}
            for vm in page.get("value", []):
                computer = ((vm.get("properties") or {}).get("osProfile") or {}).get("computerName")
                if instance in (computer, vm.get("name")):
                    return str(vm["instanceId"])
            url = page.get("nextLink")
        raise GpustackError(f"azure: instance {instance} is not in scale set {name}")

    async def close(self) -> None:
        await self._client.close()
