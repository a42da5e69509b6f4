"""A dev environment: a process group with an sshd on a fleet host, for a desktop IDE."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any, Sequence

import pulumi

from gpustack_iac.providers import devenv as devenv_provider
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import FleetHost
from gpustack_iac.stacks.task import host_inputs

# The user's own key, when there is one; else a key the stack generates for itself.
USER_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def identity_file(ctx: StackContext) -> str:
    ssh_dir = Path.home() / ".ssh"
    for name in USER_KEYS:
        if (ssh_dir / name).exists() and (ssh_dir / f"{name}.pub").exists():
            return str(ssh_dir / name)
    return str(ctx.local_dir("ssh", "id_ed25519"))


class DevEnvironment(pulumi.ComponentResource):
    outputs: pulumi.Output[dict[str, Any]]
    agents: dict[str, dict[str, Any]]

    def __init__(self, definition: dict[str, Any], hosts: Sequence[FleetHost], ctx: StackContext,
                 depends_on: Sequence[pulumi.Resource] = (), opts: pulumi.ResourceOptions | None = None) -> None:
        name = definition["name"]
        super().__init__("gpustack:index:DevEnvironment", name, {"spec": self.spec_of(definition, ctx)}, opts)
        state_dir = str(ctx.local_dir("dev-environments", name))
        secret_def = {**definition, "env": {k: pulumi.Output.secret(v) for k, v in (definition.get("env") or {}).items()}}
        res = devenv_provider.DevEnvironment(
            name,
            {"definition": secret_def, "hosts": host_inputs(hosts), "state_dir": state_dir,
             "identity_file": identity_file(ctx), "user": getpass.getuser()},
            pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        self.outputs = pulumi.Output.all(res.host, res.address, res.port, res.known_hosts, res.ide_link, res.jump,
                                         res.login_user).apply(
            lambda v: {"host": v[0], "address": v[1], "port": v[2], "known_hosts": v[3], "ide_link": v[4],
                       "identity_file": identity_file(ctx), "user": v[6] or getpass.getuser(), "state_dir": state_dir,
                       "jump": v[5]})
        # SSH fleet hosts keep no status file here: `status` asks their agent (through SSH), so it
        # needs their agent URL, token and tunnel (exported apart, as a secret).
        self.agents = {h.name: {"url": h.url, "token": h.token, "tunnel": h.tunnel} for h in hosts if h.tunnel is not None}
        self.register_outputs({"ide_link": res.ide_link})

    @staticmethod
    def spec_of(definition: dict[str, Any], ctx: StackContext) -> dict[str, Any]:
        return {**definition, "env": ctx.fingerprint_values(definition.get("env") or {})}
