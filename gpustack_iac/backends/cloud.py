"""What the cloud backends share: the plain inputs of a node group and a gateway, and the boot script.

The components in stacks/ decide (from the configuration and the catalog) and hand these plain
values to backends/{aws,gcp,azure}/resources.py, which declare the cloud's own resources with the
official Pulumi provider SDKs. Nothing here imports a provider SDK.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass, field

import pulumi

AGENT_PORT = 8600  # the agent on a cloud node; reachable only from inside the fleet's network
CONTROL_PORT = 8443  # the gateway's control API; reachable only from the admin ranges
GATEWAY_PORTS = (80, 443)  # the gateway's data plane, public
VPC_CIDR = "10.60.0.0/16"
# The gateway takes a fixed address in the shared network's first subnet, so a node's user data
# can name the controller before anything exists (docs/cloud.md#joining).
GATEWAY_PRIVATE_IP = "10.60.0.10"
CONTROLLER_URL = f"http://{GATEWAY_PRIVATE_IP}:{CONTROL_PORT}"
JOIN_DIR = "/var/lib/gpustack/joins"


@dataclass(frozen=True)
class NodeGroup:
    """One scaling group: a fleet's nodes of the same spot policy over a list of instance types."""

    name: str  # unique in the stack: "<fleet>" or "<fleet>-spot" / "<fleet>-on-demand"
    fleet: str
    region: str
    instance_types: tuple[str, ...]  # cheapest first; the first is the template's default
    spot: bool
    min_size: int
    max_size: int
    disk_gb: int
    gpu_vendor: str | None
    gpu_count: int  # per node; 0 for CPU-only
    accelerator: str | None = None  # GCP's accelerator type where the machine type does not bundle one
    max_price: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    zones: tuple[str, ...] = ()  # zonal clouds (GCP): the region's zones offering the group's types
    cluster: bool = False  # `placement: cluster`: one placement group, one zone
    reservation: str | None = None  # a capacity reservation the nodes launch into
    idle_duration: int | None = None  # seconds a node above min may stay without replicas; None: kept


@dataclass(frozen=True)
class GatewayInstance:
    name: str
    region: str
    instance_type: str
    domain: str | None
    certificate: str | None  # "lets-encrypt", "acm", or None (plain HTTP)
    acm_arn: str | None = None
    acme_directory: str | None = None
    public_ip: bool = True  # False: no public address; an internal load balancer where one is used
    zone: str | None = None  # zonal clouds (GCP): one of the region's real zones


@dataclass(frozen=True)
class Network:
    admin_cidrs: tuple[str, ...]  # SSH and the control API; empty closes both


def new_token() -> pulumi.Output[str]:
    """A fresh token as a secret. Callers keep the stored one with ignore_changes on the value, so
    the secret store (not this run) owns it: it is generated once and rotated by replacing the entry."""
    return pulumi.Output.secret(secrets.token_urlsafe(32))


def _fetch(secret_cmd: str, target: str) -> str:
    return f"umask 077; {secret_cmd} > {target}"


@dataclass(frozen=True)
class AgentJoin:
    """How a node's agent joins the controller: its URL, and a shell command that prints the
    fleet's join token from the secret store (the secret's name, never its value)."""

    fetch_join_token: str
    fleet: str
    node_group: str
    controller_url: str = CONTROLLER_URL
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class CloudGateway:
    """What each backend's gateway hands the stack: where clients and the control API reach it, and its tokens."""

    url: pulumi.Output[str]
    control_url: pulumi.Output[str]
    token: pulumi.Output[str]
    admin_token: pulumi.Output[str]


def agent_boot(fetch_agent_token: str, *, name_cmd: str = "hostname", join: AgentJoin | None = None) -> str:
    """cloud-init user data for a node: install gpustack-iac, read the agent token (and the fleet's
    join token) from the cloud's secret store through the instance's own identity, start the agent,
    which registers itself with the controller. `fetch_agent_token` is a shell command that prints
    the token (it holds a secret's name, never its value)."""
    join_args = ""
    fetch_join: list[str] = []
    if join is not None:
        fetch_join = [_fetch(join.fetch_join_token, "/var/lib/gpustack/join.token")]
        args = ["--controller-url", join.controller_url, "--join-token-file", "/var/lib/gpustack/join.token",
                "--fleet", join.fleet, "--node-group", join.node_group]
        for key, value in join.labels:
            args += ["--label", f"{key}={value}"]
        # The node's private address, which the controller on the gateway reaches.
        advertise = f'--advertise-url "http://$(hostname -I | cut -d\' \' -f1):{AGENT_PORT}"'
        join_args = " " + " ".join(shlex.quote(a) for a in args) + " " + advertise
    return "\n".join([
        "#!/bin/bash",
        "set -euo pipefail",
        "install -d -m 0700 /var/lib/gpustack",
        "python3 -m venv /opt/gpustack && /opt/gpustack/bin/pip install -q gpustack-iac",
        _fetch(fetch_agent_token, "/var/lib/gpustack/agent.token"),
        *fetch_join,
        "exec /opt/gpustack/bin/python -m gpustack_iac.runtime.agent --host 0.0.0.0 "
        f"--port {AGENT_PORT} --token-file /var/lib/gpustack/agent.token --state-dir /var/lib/gpustack/agent "
        f"--name \"$({name_cmd})\"{join_args} >> /var/log/gpustack-agent.log 2>&1 &",
        "",
    ])


def gateway_boot(fetch_token: str, fetch_admin_token: str, gateway: GatewayInstance,
                 fetch_join_tokens: str | None = None, node_groups: str | None = None, extra: str = "") -> str:
    """cloud-init user data for the gateway: both tokens come from the secret store, as for agents.
    `fetch_join_tokens` writes each fleet's join token to JOIN_DIR/<fleet>.token; it runs again
    every minute, so a fleet added after the gateway booted can join. `node_groups` is the
    `--node-groups` JSON (no secrets in it); `extra` names the package extra it needs."""
    acme = gateway.certificate == "lets-encrypt" and bool(gateway.domain)
    # With ACME, port 80 answers HTTP-01 challenges; plain HTTP then stays on 8080, which the
    # firewall does not open, and clients use 443.
    args = ["--host", "0.0.0.0", "--port", "8080" if acme else "80", "--control-port", str(CONTROL_PORT),
            "--token-file", "/var/lib/gpustack/token", "--admin-token-file", "/var/lib/gpustack/admin.token",
            "--state-dir", "/var/lib/gpustack/gateway"]
    refresh_joins: list[str] = []
    if fetch_join_tokens is not None:
        args += ["--join-token-dir", JOIN_DIR]
        refresh_joins = [f"install -d -m 0700 {JOIN_DIR}",
                         f"( while true; do ( umask 077; {fetch_join_tokens} ) || true; sleep 60; done ) &"]
    write_groups: list[str] = []
    if node_groups is not None:
        args += ["--node-groups", "/var/lib/gpustack/node-groups.json"]
        write_groups = ["cat > /var/lib/gpustack/node-groups.json <<'GPUSTACK_NODE_GROUPS'", node_groups,
                        "GPUSTACK_NODE_GROUPS"]
    if gateway.domain:
        args += ["--domain", gateway.domain]
    if acme:
        args += ["--tls-port", "443", "--certificate", "lets-encrypt", "--cert-dir", "/var/lib/gpustack/tls"]
        if gateway.acme_directory:
            args += ["--acme-directory", gateway.acme_directory]
    return "\n".join([
        "#!/bin/bash",
        "set -euo pipefail",
        "install -d -m 0700 /var/lib/gpustack",
        "python3 -m venv /opt/gpustack && /opt/gpustack/bin/pip install -q "
        + shlex.quote(f"gpustack-iac[{extra}]" if extra else "gpustack-iac"),
        _fetch(fetch_token, "/var/lib/gpustack/token"),
        _fetch(fetch_admin_token, "/var/lib/gpustack/admin.token"),
        *refresh_joins,
        *write_groups,
        "exec /opt/gpustack/bin/python -m gpustack_iac.runtime.gateway " + " ".join(shlex.quote(a) for a in args)
        + " >> /var/log/gpustack-gateway.log 2>&1 &",
        "",
    ])
