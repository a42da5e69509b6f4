"""A volume on the local or SSH backend: a named directory on one fleet host."""

from __future__ import annotations

from typing import Any

import pulumi

from gpustack_iac.providers import volume as volume_provider
from gpustack_iac.spec.models import VolumeConfig
from gpustack_iac.stacks.fleet import FleetHost


class Volume(pulumi.ComponentResource):
    def __init__(self, config: VolumeConfig, host: FleetHost, path: str, opts: pulumi.ResourceOptions | None = None) -> None:
        name = str(config.name)
        super().__init__("gpustack:index:Volume", name, {"spec": self.spec_of(config, host.name, path)}, opts)
        self.resource = volume_provider.Volume(
            name,
            {"name": name, "host": host.name, "path": path, "agent_url": host.url, "agent_token": host.token,
             "agent_tunnel": host.tunnel,
             "size_bytes": config.size.bytes if config.size is not None else 0, "auto_cleanup": config.auto_cleanup},
            pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"path": path, "host": host.name})

    @staticmethod
    def spec_of(config: VolumeConfig, host: str, path: str) -> dict[str, Any]:
        spec = config.model_dump(mode="json", exclude_none=True)
        spec.update(host=host, path=path)
        return spec
