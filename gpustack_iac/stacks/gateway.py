"""A gateway: the public endpoint, the controller beside it, and its registered hosts."""

from __future__ import annotations

from typing import Any

import pulumi

from gpustack_iac.providers import control, local
from gpustack_iac.backends import Backend, CloudVmBackend, ClusterBackend, Local, Ssh, get
from gpustack_iac.backends.cloud import GatewayInstance, Network, NodeGroup, new_token
from gpustack_iac.spec.models import GatewayConfig
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import FleetHost


class Gateway(pulumi.ComponentResource):
    url: pulumi.Output[str]
    control_url: pulumi.Output[str]
    token: pulumi.Output[str]
    admin_token: pulumi.Output[str]
    backend: Backend
    namespace: pulumi.Output[str] | None = None  # kubernetes: where the services' Deployments go
    k8s_provider: pulumi.ProviderResource | None = None
    on_host: str | None = None  # ssh: the fleet host it runs on
    key_paths: Any = None  # ssh: where the fleet keys were uploaded on that host
    control_tunnel: Any = None  # ssh: how this machine reaches its control API (an SSH forward)
    control_wait: float = 0.0  # seconds registrations wait for the control API (cloud, Kubernetes)

    def __init__(self, config: GatewayConfig, ctx: StackContext, opts: pulumi.ResourceOptions | None = None,
                 instance: GatewayInstance | None = None, network: Network | None = None,
                 scaled: list[tuple[str, str, str]] | None = None, k8s_provider: pulumi.ProviderResource | None = None,
                 shared_network: Any = None, node_groups: list[NodeGroup] | None = None,
                 join_secrets: dict[str, Any] | None = None, fleet_hosts: list[FleetHost] | None = None,
                 scaling_groups: list[Any] | None = None,
                 runtime_image: str | None = None) -> None:
        self.gateway_name = str(config.name)
        self.backend = get(config.backend)
        super().__init__("gpustack:index:Gateway", self.gateway_name, {"spec": self.spec_of(config)}, opts)
        backend = self.backend
        if isinstance(backend, Local):
            self._local(config, ctx)
        elif isinstance(backend, Ssh):
            self._on_host(config, fleet_hosts or [])
        elif isinstance(backend, ClusterBackend):
            kube = backend.resources()
            ns = kube.namespace(f"{ctx.project}-{ctx.stack}", self, k8s_provider)
            self.namespace, self.k8s_provider = ns.metadata["name"], k8s_provider
            assert runtime_image is not None  # pinned by digest at plan (backends/kubernetes/image.py)
            out = kube.gateway(self.gateway_name, self.namespace, new_token(), new_token(), scaled or [], config.domain,
                               self, k8s_provider, image=runtime_image)
            self._set(out.url, out.control_url, out.token, out.admin_token, control.CONTROL_WAIT)
        else:
            assert isinstance(backend, CloudVmBackend) and instance is not None
            # Where the backend sizes node groups, its gateway is granted and told them (docs/cloud.md#node-group-sizing).
            sizing = backend.gateway_sizing(node_groups or [], join_secrets or {}, scaling_groups or [])
            out = backend.resources().gateway(instance, network or Network(()), ctx.project, ctx.stack, self,
                                                         shared=shared_network, **sizing)
            self._set(out.url, out.control_url, out.token, out.admin_token, control.CONTROL_WAIT)
        self.register_outputs({"url": self.url, "control_url": self.control_url})

    def _set(self, url: Any, control_url: Any, token: Any, admin_token: Any, control_wait: float = 0.0) -> None:
        # A gateway this stack boots elsewhere (cloud instance, pod) answers minutes after it exists:
        # registrations wait for it (providers/control.py, await_controller).
        self.control_wait = control_wait
        self.url, self.control_url = pulumi.Output.from_input(url), pulumi.Output.from_input(control_url)
        self.token, self.admin_token = pulumi.Output.secret(token), pulumi.Output.secret(admin_token)

    def _local(self, config: GatewayConfig, ctx: StackContext) -> None:
        tls = local_tls(config)
        if config.domain and tls is None:
            ctx.warn(f"gateway {self.gateway_name}: the local backend serves http on 127.0.0.1; domain {config.domain} is matched by Host header only")
        props: dict[str, Any] = {"name": self.gateway_name, "state_dir": str(ctx.local_dir("gateways", self.gateway_name)),
                                 "domain": config.domain}
        if config.data_plane != "python":  # absent for the default, so existing stacks see no change
            props["data_plane"] = config.data_plane
        if tls is not None:
            props["tls"] = tls
        process = local.Gateway(self.gateway_name, props, pulumi.ResourceOptions(parent=self))
        self._process = process
        self.url, self.control_url = process.url, process.control_url
        self.token, self.admin_token = process.token, process.admin_token

    def _on_host(self, config: GatewayConfig, fleet_hosts: list[FleetHost]) -> None:
        """On one SSH fleet host (providers/sshgateway.py), after that host's agent is installed."""
        from gpustack_iac.providers import sshgateway  # noqa: PLC0415 - fabric loads only for SSH stacks

        host = next(h for h in fleet_hosts if h.ssh_props and h.labels.get("hostname") == config.host)  # checked at plan
        assert host.ssh_props is not None
        keys = ("hostname", "port", "user", "identity_file", "known_hosts", "host_key", "host_key_policy", "proxy_jump",
                "install_dir", "cache_dir")
        jump = host.ssh_props.get("proxy_jump") or {}
        props = {**{k: host.ssh_props.get(k) for k in keys}, "name": self.gateway_name, "domain": config.domain,
                 "keys": {"identity": host.ssh_props.get("identity_file"), "jump_identity": jump.get("identity_file")}}
        gw = sshgateway.GatewayHost(self.gateway_name, props, pulumi.ResourceOptions(parent=self, depends_on=[host.resource]
                                                                                      if host.resource else []))
        self.on_host, self.key_paths, self.control_tunnel = host.name, gw.key_paths, gw.tunnel
        self._set(gw.url, gw.control_url, gw.token, gw.admin_token)

    @staticmethod
    def spec_of(config: GatewayConfig) -> dict[str, Any]:
        return config.model_dump(mode="json", exclude_none=True)

    def register_host(self, host: FleetHost) -> control.AgentRegistration:
        tunnel: Any = host.tunnel
        if self.on_host is not None and host.tunnel is not None:
            # The gateway's own host: its agent on loopback, no tunnel. Other hosts: tunnels held on
            # the gateway's host, with the fleet keys uploaded there.
            tunnel = None if host.name == self.on_host else pulumi.Output.all(host.tunnel, self.key_paths).apply(
                lambda args: _remote_keys(args[0], args[1]))
        return control.AgentRegistration(
            f"{self.gateway_name}-{host.name}",
            {"name": host.name, "agent_url": host.url, "agent_token": host.token, "labels": host.labels,
             "tunnel": tunnel, "control_url": self.control_url, "admin_token": self.admin_token,
             "control_tunnel": self.control_tunnel, "control_wait": self.control_wait},
            pulumi.ResourceOptions(parent=self),
        )


def _remote_keys(tunnel: dict[str, Any], key_paths: dict[str, str]) -> dict[str, Any]:
    """A host's tunnel spec as the gateway's host uses it: the key paths uploaded there."""
    out = {**tunnel, "identity_file": key_paths.get("identity") or tunnel.get("identity_file")}
    if out.get("proxy_jump"):
        out["proxy_jump"] = {**out["proxy_jump"], "identity_file": key_paths.get("jump_identity") or out["proxy_jump"].get("identity_file")}
    return out


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
