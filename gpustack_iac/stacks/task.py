"""A task: one run of a batch job on one or more fleet hosts, as a resource."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Sequence

import pulumi

from gpustack_iac.providers import task as task_provider
from gpustack_iac.stacks.context import StackContext, hide_registry_password
from gpustack_iac.stacks.fleet import FleetHost


def run_id(definition: dict[str, Any]) -> str:
    """Changes whenever the definition does: a changed task is a new run."""
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def host_inputs(hosts: Sequence[FleetHost]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for h in hosts:
        host: dict[str, Any] = {"name": h.name, "url": h.url, "token": h.token, "labels": h.labels}
        if h.tunnel is not None:  # an SSH fleet host: the runner reaches its agent through SSH
            host.update(tunnel=h.tunnel, address=h.address)
        out.append(host)
    return out


class Task(pulumi.ComponentResource):
    state_dir: str

    def __init__(self, definition: dict[str, Any], hosts: Sequence[FleetHost], ctx: StackContext,
                 depends_on: Sequence[pulumi.Resource] = (), opts: pulumi.ResourceOptions | None = None) -> None:
        name = definition["name"]
        super().__init__("gpustack:index:Task", name, {"spec": self.spec_of(definition, ctx)}, opts)
        self.state_dir = str(ctx.local_dir("tasks", name))
        task_provider.Task(
            name,
            {"definition": _secret_env(definition), "run_id": run_id(self.spec_of(definition, ctx)), "hosts": host_inputs(hosts),
             "state_dir": self.state_dir},
            pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        self.register_outputs({"state_dir": self.state_dir})

    @staticmethod
    def spec_of(definition: dict[str, Any], ctx: StackContext) -> dict[str, Any]:
        out = copy.deepcopy(definition)
        out["env"] = ctx.fingerprint_values(out.get("env") or {})
        hide_registry_password(out.get("container"), lambda v: ctx.fingerprint_values({"p": v})["p"])
        return out


def _secret_env(definition: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(definition)
    out["env"] = {k: pulumi.Output.secret(v) for k, v in (out.get("env") or {}).items()}
    hide_registry_password(out.get("container"), pulumi.Output.secret)
    return out
