"""A router: one OpenAI model alias served by several services, registered with a gateway."""

from __future__ import annotations

from typing import Any, Sequence

import pulumi

from gpustack_iac.providers import control
from gpustack_iac.spec.models import RouterConfig
from gpustack_iac.stacks.gateway import Gateway


class Router(pulumi.ComponentResource):
    def __init__(self, config: RouterConfig, gateway: Gateway, members: Sequence[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        name = str(config.name)
        definition = self.definition_of(config)
        super().__init__("gpustack:index:Router", name, {"spec": definition}, opts)
        control.RouterRegistration(
            name,
            {"definition": definition, "control_url": gateway.control_url, "admin_token": gateway.admin_token,
             "control_tunnel": gateway.control_tunnel, "control_wait": gateway.control_wait},
            # Members first: a router over a service the controller does not know yet would route nowhere.
            pulumi.ResourceOptions(parent=self, depends_on=list(members)),
        )
        self.register_outputs({"model": config.model})

    @staticmethod
    def definition_of(config: RouterConfig) -> dict[str, Any]:
        """The router registration of docs/runtime-api.md (the alias is the router's name there)."""
        return {
            "name": config.model,
            "strategy": config.strategy,
            "members": [{"service": m.service, "weight": m.weight, "priority": m.priority, "cost": m.cost}
                        for m in config.members],
            "fallbacks": list(config.fallbacks),
            "retries": config.retries,
            "cooldown_seconds": float(config.cooldown or 0),
        }
