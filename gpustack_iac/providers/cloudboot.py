"""Boot scripts (cloud-init user data) for cloud nodes and gateways, and their systemd units.

A boot script installs nothing from a package index: it writes runtime/bootfetch.py (standard
library only, carried compressed), which fetches the pinned runtime (runtime_bundle.py) from the
stack's bucket with the instance's identity, checks every SHA-256 and installs it into its own environment (stdlib venv, no pip);
then reads the tokens from the cloud's secret store into 0600 files and starts the agent or the
gateway as a systemd unit with `Restart=always`. Any failure stops the script (`set -euo
pipefail`) with a "gpustack boot:" line in cloud-init's log: a node that cannot verify its runtime
never joins.
"""

from __future__ import annotations

import base64
import json
import shlex
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gpustack_iac.providers.runtime_bundle import RuntimeBundle

ROOT = "/opt/gpustack"  # bootfetch, its config, the wheels and the runtime environment (ROOT/runtime)
STATE = "/var/lib/gpustack"  # tokens, identity, agent and controller state
UNITS = "/etc/systemd/system"
PYTHON = f"{ROOT}/runtime/bin/python"
_FETCH = f"python3 {ROOT}/bootfetch.py {ROOT}/boot.json"
_BOOTFETCH = Path(__file__).resolve().parents[1] / "runtime" / "bootfetch.py"


@dataclass(frozen=True)
class Endpoints:
    """Where an instance reaches its cloud: the real services by default; the boot rehearsal
    (tests/cloud/rehearsal/) renders the same script against local stand-ins."""

    metadata: str
    storage: str
    secrets: str
    api: str | None = None  # the gateway's SDK endpoint (Auto Scaling); None: the SDK's default


# Each cloud's own services, by the cloud a boot script is rendered for.
_CLOUD_ENDPOINTS: dict[str, Callable[[str], Endpoints]] = {
    "aws": lambda region: Endpoints("http://169.254.169.254", f"https://s3.{region}.amazonaws.com",
                                    f"https://ssm.{region}.amazonaws.com"),
    "gcp": lambda region: Endpoints("http://metadata.google.internal", "https://storage.googleapis.com",
                                    "https://secretmanager.googleapis.com"),
    # The fetcher fills {account} (the stack's storage account) and {vault} (each secret's vault).
    "azure": lambda region: Endpoints("http://169.254.169.254", "https://{account}.blob.core.windows.net",
                                      "https://{vault}.vault.azure.net"),
}


def cloud_endpoints(cloud: str, region: str) -> Endpoints:
    if cloud not in _CLOUD_ENDPOINTS:
        raise ValueError(f"no boot endpoints for {cloud}")
    return _CLOUD_ENDPOINTS[cloud](region)


@dataclass(frozen=True)
class BootSource:
    """The runtime's bucket and the instance's cloud, as the boot script's config (no secrets)."""

    cloud: str
    region: str
    bucket: str
    bundle: RuntimeBundle
    project: str | None = None  # GCP's project id (Secret Manager paths)
    endpoints: Endpoints | None = None
    account: str | None = None  # Azure: the storage account holding `bucket` (a container)
    identity: str | None = None  # Azure: the managed identity's client id the instance signs in as

    def config(self) -> str:
        ep = self.endpoints or cloud_endpoints(self.cloud, self.region)
        return json.dumps({
            "cloud": self.cloud, "region": self.region, "bucket": self.bucket, "project": self.project,
            "account": self.account, "identity": self.identity,
            "prefix": self.bundle.prefix, "manifest_sha256": self.bundle.manifest_sha256,
            "python": self.bundle.python, "machine": self.bundle.machine, "root": ROOT,
            "endpoints": {"metadata": ep.metadata, "storage": ep.storage, "secrets": ep.secrets}}, sort_keys=True)

    def unit_environment(self) -> list[str]:
        """The gateway's SDK endpoints, set only where they are not the cloud's own."""
        ep = self.endpoints
        if ep is None or self.cloud != "aws":
            return []
        env = [f"AWS_EC2_METADATA_SERVICE_ENDPOINT={ep.metadata}/"]
        return env + ([f"AWS_ENDPOINT_URL={ep.api}"] if ep.api else [])


@dataclass(frozen=True)
class NodeJoin:
    agent_token_secret: str  # secret names, never values
    join_token_secret: str
    fleet: str
    node_group: str
    controller_url: str
    agent_port: int
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GatewayBoot:
    token_secret: str
    admin_token_secret: str
    args: tuple[str, ...]  # the gateway's command line after `-m gpustack_iac.runtime.gateway`
    joins_path: str | None = None  # where the fleets' join tokens live in the secret store
    join_dir: str = f"{STATE}/joins"
    node_groups: str | None = None  # the --node-groups JSON, no secrets in it


def unit(description: str, argv: list[str], environment: list[str] | None = None, env_file: str | None = None) -> str:
    lines = ["[Unit]", f"Description={description}", "After=network-online.target", "Wants=network-online.target",
             "", "[Service]", "Type=simple"]
    lines += [f"EnvironmentFile={env_file}"] if env_file else []
    lines += [f"Environment={shlex.quote(e)}" for e in environment or []]
    # systemd expands ${NAME} inside words from the environment (the identity file); `%` starts
    # its own specifiers, so a literal one is doubled.
    lines += ["ExecStart=" + " ".join(shlex.quote(a).replace("%", "%%") for a in argv),
              "Restart=always", "RestartSec=2", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _heredoc(path: str, text: str, tag: str) -> list[str]:
    return [f"cat > {path} <<'{tag}'", text.rstrip("\n"), tag]


def _prologue(source: BootSource) -> list[str]:
    packed = base64.b64encode(zlib.compress(_BOOTFETCH.read_bytes(), 9)).decode()
    unpack = "import base64, sys, zlib; sys.stdout.buffer.write(zlib.decompress(base64.b64decode(sys.stdin.read())))"
    return ["#!/bin/bash", "set -euo pipefail",
            'command -v python3 >/dev/null || { echo "gpustack boot: this image has no python3" >&2; exit 1; }',
            f"install -d -m 0755 {ROOT} && install -d -m 0700 {STATE}",
            f"python3 -c {shlex.quote(unpack)} > {ROOT}/bootfetch.py <<'GPUSTACK_BOOTFETCH'", packed, "GPUSTACK_BOOTFETCH",
            *_heredoc(f"{ROOT}/boot.json", source.config(), "GPUSTACK_BOOT_CONFIG"),
            f"{_FETCH} install"]


def _start(name: str, text: str) -> list[str]:
    return [*_heredoc(f"{UNITS}/{name}.service", text, "GPUSTACK_UNIT"),
            "systemctl daemon-reload", f"systemctl enable --now {name}.service"]


def node_boot(source: BootSource, join: NodeJoin) -> str:
    """cloud-init user data for a node of a node group: the agent joins the controller."""
    argv = [PYTHON, "-m", "gpustack_iac.runtime.agent", "--host", "0.0.0.0", "--port", str(join.agent_port),
            "--token-file", f"{STATE}/agent.token", "--state-dir", f"{STATE}/agent", "--name", "${GPUSTACK_NAME}",
            "--controller-url", join.controller_url, "--join-token-file", f"{STATE}/join.token",
            "--fleet", join.fleet, "--node-group", join.node_group,
            "--advertise-url", f"http://${{GPUSTACK_ADDRESS}}:{join.agent_port}"]
    for key, value in join.labels:
        argv += ["--label", f"{key}={value}"]
    return "\n".join([
        *_prologue(source),
        f"{_FETCH} secret {shlex.quote(join.agent_token_secret)} {STATE}/agent.token",
        f"{_FETCH} secret {shlex.quote(join.join_token_secret)} {STATE}/join.token",
        f"{_FETCH} identity {STATE}/identity.env",
        *_start("gpustack-agent", unit("gpustack-iac agent", argv, env_file=f"{STATE}/identity.env")), ""])


def gateway_boot(source: BootSource, gw: GatewayBoot) -> str:
    """cloud-init user data for the gateway (proxy and controller), and the unit that keeps the
    fleets' join tokens current (a fleet added later can join without a reboot)."""
    lines = [*_prologue(source),
             f"{_FETCH} secret {shlex.quote(gw.token_secret)} {STATE}/token",
             f"{_FETCH} secret {shlex.quote(gw.admin_token_secret)} {STATE}/admin.token"]
    args = list(gw.args)
    if gw.node_groups is not None:
        lines += _heredoc(f"{STATE}/node-groups.json", gw.node_groups, "GPUSTACK_NODE_GROUPS")
        args += ["--node-groups", f"{STATE}/node-groups.json"]
    if gw.joins_path is not None:
        args += ["--join-token-dir", gw.join_dir]
        lines += [f"install -d -m 0700 {gw.join_dir}", f"{_FETCH} secrets-under {shlex.quote(gw.joins_path)} {gw.join_dir}"]
        refresh = ["python3", f"{ROOT}/bootfetch.py", f"{ROOT}/boot.json", "secrets-under", gw.joins_path,
                   gw.join_dir, "--every", "60"]
        lines += _start("gpustack-joins", unit("gpustack-iac join tokens", refresh))
    argv = [PYTHON, "-m", "gpustack_iac.runtime.gateway", *args, "--token-file", f"{STATE}/token",
            "--admin-token-file", f"{STATE}/admin.token", "--state-dir", f"{STATE}/gateway"]
    lines += _start("gpustack-gateway", unit("gpustack-iac gateway", argv, source.unit_environment()))
    return "\n".join(lines + [""])
