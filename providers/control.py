"""Registrations with a gateway's controller: agents, services and routers.

Backend-neutral: whatever started the gateway (local process, VM, Kubernetes pod), these
resources talk to its control API (docs/runtime-api.md). Reading one back asks the controller;
an unreachable controller reads as "gone", so a rebooted gateway is planned for re-registration
instead of being trusted.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.providers import http

READY_TIMEOUT = 300.0


class ServiceNotReady(RuntimeApiError):
    """A service did not get ready (or its rollout failed) while `up` waited."""


class AgentRegistrationProvider(ResourceProvider):
    serialize_as_secret_always = False

    def _put(self, props: dict[str, Any]) -> dict[str, Any]:
        body = {"url": props["agent_url"], "token": props["agent_token"], "labels": props.get("labels") or {}}
        http.call("PUT", props["control_url"], f"/control/agents/{props['name']}", props["admin_token"], body)
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=str(props["name"]), outs=self._put(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            agents = http.call("GET", props["control_url"], "/control/agents", props["admin_token"])
        except RuntimeApiError:
            return ReadResult(id_=None, outs={})
        known = {a["name"]: a for a in agents}
        if id_ not in known or known[id_].get("url") != props.get("agent_url"):
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds.get("name") != news.get("name") or olds.get("control_url") != news.get("control_url"):
            return DiffResult(changes=True, replaces=["name", "control_url"], delete_before_replace=True)
        keys = ("agent_url", "agent_token", "labels", "admin_token")
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._put(news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            http.call("DELETE", props["control_url"], f"/control/agents/{id_}", props["admin_token"])
        except http.NotFound:
            pass


class AgentRegistration(Resource, module="control", name="AgentRegistration"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(AgentRegistrationProvider(), name, props, opts)


def _wait_ready(props: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the service's status until every group has its replicas ready, or the rollout failed."""
    name = props["definition"]["name"]
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = http.call("GET", props["control_url"], f"/control/services/{name}", props["admin_token"])
        rollout = status.get("rollout") or {}
        if rollout.get("state") == "failed":
            raise ServiceNotReady(f"service {name}: rollout failed: {rollout.get('message', 'new replicas did not get ready')}; "
                                  "the previous version keeps serving")
        groups = status.get("groups", [])
        if groups and all(g.get("ready", 0) >= g.get("desired", 0) for g in groups) and not rollout.get("state") == "running":
            return status
        time.sleep(0.5)
    waiting = ", ".join(f"{g['name']} {g.get('ready', 0)}/{g.get('desired', 0)} ready" for g in status.get("groups", []))
    raise ServiceNotReady(f"service {name} not ready after {timeout:.0f} s ({waiting or 'no status'}); see `gpustack-iac status` and `gpustack-iac logs {name}`")


class ServiceRegistrationProvider(ResourceProvider):
    serialize_as_secret_always = False

    def _put(self, props: dict[str, Any]) -> dict[str, Any]:
        definition = props["definition"]
        answer = http.call("PUT", props["control_url"], f"/control/services/{definition['name']}", props["admin_token"], definition)
        if props.get("wait", True):
            _wait_ready(props, float(props.get("ready_timeout") or READY_TIMEOUT))
        return {**props, "endpoint": answer.get("endpoint", "")}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=str(props["definition"]["name"]), outs=self._put(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            status = http.call("GET", props["control_url"], f"/control/services/{id_}", props["admin_token"])
        except RuntimeApiError:
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs={**props, "endpoint": status.get("endpoint", props.get("endpoint", ""))})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds["definition"]["name"] != news["definition"]["name"] or olds.get("control_url") != news.get("control_url"):
            return DiffResult(changes=True, replaces=["definition.name", "control_url"], delete_before_replace=True)
        keys = ("definition", "admin_token", "wait", "ready_timeout")
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._put(news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            http.call("DELETE", props["control_url"], f"/control/services/{id_}", props["admin_token"])
        except http.NotFound:
            pass


class ServiceRegistration(Resource, module="control", name="ServiceRegistration"):
    if TYPE_CHECKING:
        endpoint: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ServiceRegistrationProvider(), name, {"endpoint": None, **props}, opts)


class RouterRegistrationProvider(ResourceProvider):
    """A model alias served by several services, registered with the gateway's controller."""

    serialize_as_secret_always = False

    @staticmethod
    def _path(props: dict[str, Any]) -> str:
        return f"/control/routers/{urllib.parse.quote(props['definition']['name'], safe='')}"

    def _put(self, props: dict[str, Any]) -> dict[str, Any]:
        http.call("PUT", props["control_url"], self._path(props), props["admin_token"], props["definition"])
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=str(props["definition"]["name"]), outs=self._put(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            http.call("GET", props["control_url"], self._path(props), props["admin_token"])
        except RuntimeApiError:
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds["definition"]["name"] != news["definition"]["name"] or olds.get("control_url") != news.get("control_url"):
            return DiffResult(changes=True, replaces=["definition.name", "control_url"], delete_before_replace=True)
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in ("definition", "admin_token")))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._put(news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            http.call("DELETE", props["control_url"], self._path(props), props["admin_token"])
        except http.NotFound:
            pass


class RouterRegistration(Resource, module="control", name="RouterRegistration"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RouterRegistrationProvider(), name, props, opts)
