"""A gateway: the public endpoint, the controller beside it, and its registered hosts."""

from __future__ import annotations

from typing import Any

import pulumi

from gpustack_iac.providers import control, local
from gpustack_iac.providers.cloud import GatewayInstance, Network, NodeGroup, new_token
from gpustack_iac.spec.models import GatewayConfig
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import FleetHost


class Gateway(pulumi.ComponentResource):
    url: pulumi.Output[str]
    control_url: pulumi.Output[str]
    token: pulumi.Output[str]
    admin_token: pulumi.Output[str]
    backend: str
    namespace: pulumi.Output[str] | None = None  # kubernetes: where the services' Deployments go
    k8s_provider: pulumi.ProviderResource | None = None

    def __init__(self, config: GatewayConfig, ctx: StackContext, opts: pulumi.ResourceOptions | None = None,
                 instance: GatewayInstance | None = None, network: Network | None = None,
                 scaled: list[tuple[str, str, str]] | None = None, k8s_provider: pulumi.ProviderResource | None = None,
                 shared_network: Any = None, node_groups: list[NodeGroup] | None = None,
                 join_secrets: dict[str, Any] | None = None) -> None:
        self.gateway_name = str(config.name)
        self.backend = config.backend
        super().__init__("gpustack:index:Gateway", self.gateway_name, {"spec": self.spec_of(config)}, opts)
        if config.backend == "local":
            self._local(config, ctx)
        elif config.backend == "kubernetes":
            from gpustack_iac.stacks.cloud import backend_module

            kube = backend_module("kubernetes")
            ns = kube.namespace(f"{ctx.project}-{ctx.stack}", self, k8s_provider)
            self.namespace, self.k8s_provider = ns.metadata["name"], k8s_provider
            out = kube.gateway(self.gateway_name, self.namespace, new_token(), new_token(), scaled or [], config.domain,
                               self, k8s_provider)
            self._set(out.url, out.control_url, out.token, out.admin_token)
        else:
            from gpustack_iac.stacks.cloud import backend_module

            assert instance is not None
            # Only AWS sizes its node groups from the controller so far (docs/cloud.md#node-group-sizing).
            sizing: dict[str, Any] = {"node_groups": node_groups or []} if config.backend == "aws" else {}
            if config.backend in ("gcp", "azure"):
                sizing = {"joins": join_secrets or {}}
            out = backend_module(config.backend).gateway(instance, network or Network(()), ctx.project, ctx.stack, self,
                                                         shared=shared_network, **sizing)
            self._set(out.url, out.control_url, out.token, out.admin_token)
        self.register_outputs({"url": self.url, "control_url": self.control_url})

    def _set(self, url: Any, control_url: Any, token: Any, admin_token: Any) -> None:
        self.url, self.control_url = pulumi.Output.from_input(url), pulumi.Output.from_input(control_url)
        self.token, self.admin_token = pulumi.Output.secret(token), pulumi.Output.secret(admin_token)

    def _local(self, config: GatewayConfig, ctx: StackContext) -> None:
        tls = local_tls(config)
        if config.domain and tls is None:
            ctx.warn(f"gateway {self.gateway_name}: the local backend serves http on 127.0.0.1; domain {config.domain} is matched by Host header only")
        props: dict[str, Any] = {"name": self.gateway_name, "state_dir": str(ctx.local_dir("gateways", self.gateway_name)),
                                 "domain": config.domain}
        if tls is not None:
            props["tls"] = tls
        process = local.Gateway(self.gateway_name, props, pulumi.ResourceOptions(parent=self))
        self._process = process
        self.url, self.control_url = process.url, process.control_url
        self.token, self.admin_token = process.token, process.admin_token

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


def local_tls(config: GatewayConfig) -> dict[str, Any] | None:
    """The certificate a local (or SSH) gateway serves, or None for plain HTTP.

    Only a certificate the configuration names counts: the model's default (lets-encrypt) would
    send a laptop's gateway to the public Let's Encrypt, which cannot reach it."""
    cert = config.certificate
    if cert is None or "certificate" not in config.model_fields_set:
        return None
    if cert.type == "lets-encrypt" and not config.domain:
        return None
    return cert.model_dump(mode="json", exclude_none=True)
