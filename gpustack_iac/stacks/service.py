"""A service: its definition registered with a gateway's controller, which runs the replicas."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import pulumi

from gpustack_iac.backends import ClusterBackend
from gpustack_iac.providers import control
from gpustack_iac.stacks.context import StackContext, hide_registry_password
from gpustack_iac.stacks.gateway import Gateway


class Service(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]

    def __init__(
        self,
        definition: dict[str, Any],
        gateway: Gateway,
        depends_on: Sequence[pulumi.Resource],
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        name = definition["name"]
        super().__init__("gpustack:index:Service", name, {"spec": self.spec_of(definition, ctx)}, opts)
        if isinstance(gateway.backend, ClusterBackend):
            # On Kubernetes the replicas are the groups' Deployments; the gateway routes to the Service.
            assert gateway.namespace is not None
            gateway.backend.resources().service(definition, gateway.namespace, self, gateway.k8s_provider)
            self.endpoint = gateway.url.apply(lambda u: f"{u}/services/{name}")
            self.register_outputs({"endpoint": self.endpoint})
            return
        registration = control.ServiceRegistration(
            name,
            {"definition": _secret_env(definition), "control_url": gateway.control_url, "admin_token": gateway.admin_token,
             "control_tunnel": gateway.control_tunnel, "control_wait": gateway.control_wait},
            # Replicas need hosts: register the service only after the agents are known to the controller.
            pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        self.endpoint = registration.endpoint
        self.register_outputs({"endpoint": self.endpoint})

    @staticmethod
    def spec_of(definition: dict[str, Any], ctx: StackContext) -> dict[str, Any]:
        """The definition with env values and generations fingerprinted (see StackContext.fingerprint_values)."""
        out = copy.deepcopy(definition)
        out.update(ctx.fingerprint_values(_generations(out)))
        for group in out["groups"]:
            group["env"] = ctx.fingerprint_values(group["env"])
            group.update(ctx.fingerprint_values(_generations(group)))
            hide_registry_password(group.get("container"), lambda v: ctx.fingerprint_values({"p": v})["p"])
        return out


def _secret_env(definition: dict[str, Any]) -> dict[str, Any]:
    """Every env value travels as a secret: encrypted in state, `[secret]` in plans and `up`'s output.
    A literal `API_KEY=sk-...` is as secret as one read from the environment, and the tool cannot tell
    them apart by name; the plan's summary still says which variables changed (keyed fingerprints)."""
    out = copy.deepcopy(definition)
    out.update({k: pulumi.Output.secret(v) for k, v in _generations(out).items()})
    for group in out["groups"]:
        group["env"] = {k: pulumi.Output.secret(str(v)) for k, v in group["env"].items()}
        group.update({k: pulumi.Output.secret(v) for k, v in _generations(group).items()})
        hide_registry_password(group.get("container"), pulumi.Output.secret)
    return out


def _generations(part: dict[str, Any]) -> dict[str, str]:
    """A service's or group's `generation`: an unkeyed SHA-256 over inputs that include env values,
    so a short secret could be checked against guesses offline; it is kept out of the state in the clear."""
    return {"generation": part["generation"]} if isinstance(part.get("generation"), str) else {}
