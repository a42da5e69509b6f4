"""A gateway: the public endpoint, the controller beside it, and its registered hosts."""

from __future__ import annotations

from typing import Any

import pulumi

from gpustack_iac.providers import control, local
from gpustack_iac.spec.models import GatewayConfig
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import FleetHost


class Gateway(pulumi.ComponentResource):
    url: pulumi.Output[str]
    control_url: pulumi.Output[str]
    token: pulumi.Output[str]
    admin_token: pulumi.Output[str]

    def __init__(self, config: GatewayConfig, ctx: StackContext, opts: pulumi.ResourceOptions | None = None) -> None:
        self.gateway_name = str(config.name)
        super().__init__("gpustack:index:Gateway", self.gateway_name, {"spec": self.spec_of(config)}, opts)
        if config.domain:
            ctx.warn(f"gateway {self.gateway_name}: the local backend serves http on 127.0.0.1; domain {config.domain} is matched by Host header only")
        process = local.Gateway(
            self.gateway_name,
            {"name": self.gateway_name, "state_dir": str(ctx.local_dir("gateways", self.gateway_name)), "domain": config.domain},
            pulumi.ResourceOptions(parent=self),
        )
        self._process = process
        self.url, self.control_url = process.url, process.control_url
        self.token, self.admin_token = process.token, process.admin_token
        self.register_outputs({"url": self.url, "control_url": self.control_url})

    @staticmethod
    def spec_of(config: GatewayConfig) -> dict[str, Any]:
        return config.model_dump(mode="json", exclude_none=True)

    def register_host(self, host: FleetHost) -> control.AgentRegistration:
        return control.AgentRegistration(
            f"{self.gateway_name}-{host.name}",
            {"name": host.name, "agent_url": host.url, "agent_token": host.token, "labels": host.labels,
             "tunnel": host.tunnel, "control_url": self.control_url, "admin_token": self.admin_token},
            pulumi.ResourceOptions(parent=self),
        )
