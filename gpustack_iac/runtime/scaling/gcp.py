"""Size GCP managed instance groups (a fleet's regional MIGs) through the Compute Engine REST API.

Calls (compute/v1, regional instance group managers): `get` for `targetSize`, `resize` to grow,
`listManagedInstances` + `deleteInstances` to remove one named (drained) instance, which also
lowers `targetSize` by one, so the group neither replaces it nor picks another instance. Plain
authenticated REST with the instance's service account (rest.py says why not the SDK); the
gateway's service account is granted these calls on the stack's groups only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.scaling.rest import MetadataToken, RestClient

API = "https://compute.googleapis.com"


class MigScaler:
    """A `CloudGroupScaler` over one project's regional managed instance groups."""

    def __init__(self, client: RestClient, project: str, region: str, api: str = API) -> None:
        self._client = client
        self._base = f"{api.rstrip('/')}/compute/v1/projects/{project}/regions/{region}/instanceGroupManagers"
        self._seen: set[tuple[str, str]] = set()  # (timestamp, instance) of the errors already reported
        self._since = dt.datetime.now(dt.timezone.utc)  # older errors were a previous controller's

    @classmethod
    def from_metadata(cls, project: str, region: str, metadata: str | None = None, api: str | None = None) -> "MigScaler":
        token = MetadataToken.gcp(metadata) if metadata else MetadataToken.gcp()
        return cls(RestClient("gcp", token), project, region, api or API)

    async def get_size(self, name: str) -> int:
        mig = await self._client.call("GET", f"{self._base}/{name}", what=f"read instance group {name}")
        return int(mig["targetSize"])

    async def set_size(self, name: str, size: int) -> int:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        await self._client.call("POST", f"{self._base}/{name}/resize?size={size}", what=f"resize instance group {name} to {size}")
        return size

    async def remove_node(self, name: str, instance: str) -> int:
        url = await self._instance_url(name, instance)
        await self._client.call("POST", f"{self._base}/{name}/deleteInstances",
                                {"instances": [url], "skipInstancesOnValidationError": False},
                                what=f"delete instance {instance} of instance group {name}")
        return await self.get_size(name)

    async def launch_errors(self, name: str) -> list[str]:
        """`listErrors`: the group's recent failed instance creations, each reported once."""
        page = await self._client.call("GET", f"{self._base}/{name}/listErrors", what=f"list errors of instance group {name}") or {}
        out = []
        for item in page.get("items", []):
            key = (str(item.get("timestamp", "")), str(item.get("instanceActionDetails", {}).get("instance", "")))
            if key in self._seen or not _after(key[0], self._since):
                continue
            self._seen.add(key)
            err = item.get("error") or {}
            out.append(f"{err.get('code', '')}: {err.get('message', '')}")
        return out

    async def _instance_url(self, name: str, instance: str) -> str:
        """The managed instance's URL; the instance must be in this group (the agent's name is the
        instance's name)."""
        token = ""
        while True:
            query = f"?pageToken={token}" if token else ""
            page: dict[str, Any] = await self._client.call(
                "POST", f"{self._base}/{name}/listManagedInstances{query}", what=f"list instance group {name}") or {}
            for m in page.get("managedInstances", []):
                url = str(m.get("instance", ""))
                if url.rsplit("/", 1)[-1] == instance:
                    return url
            token = str(page.get("nextPageToken") or "")
            if not token:
                raise GpustackError(f"gcp: instance {instance} is not in instance group {name}")

    async def close(self) -> None:
        await self._client.close()


def _after(timestamp: str, since: dt.datetime) -> bool:
    try:
        return dt.datetime.fromisoformat(timestamp) >= since
    except ValueError:
        return True  # an unreadable time: report it rather than hide it
