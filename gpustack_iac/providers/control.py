"""Registrations with a gateway's controller: agents, services and routers.

Backend-neutral: whatever started the gateway (local process, VM, Kubernetes pod), these
resources talk to its control API (docs/runtime-api.md). Reading one back asks the controller;
an unreachable controller reads as "gone", so a rebooted gateway is planned for re-registration
instead of being trusted.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from gpustack_iac.contract import cancel
from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime import sync_client as http

READY_TIMEOUT = 300.0
# How long a registration waits for a cloud or Kubernetes gateway's control API to answer at all
# (the `control_wait` input; 0, for local and SSH gateways already checked by their own resource,
# is one try as before).
CONTROL_WAIT = 900.0
# Replacements in a row after which a group is in a crash loop and waiting longer is pointless.
CRASH_LOOP = 2
# Placement reasons (runtime/controller/placement.py) that may clear up by themselves.
TRANSIENT_NO_CAPACITY = ("host facts unknown", "agent unreachable", "no agent registered")


@contextlib.contextmanager
def reach(props: dict[str, Any]) -> Iterator[str]:
    """The controller's URL as this machine reaches it: as given, or through an SSH forward for a
    gateway on a fleet host (`control_tunnel`, providers/sshgateway.py), whose control API binds
    that host's loopback."""
    tunnel = props.get("control_tunnel")
    if not tunnel:
        yield str(props["control_url"])
        return
    from gpustack_iac.runtime.tunnels import TunnelSpec, forwarded  # noqa: PLC0415 - SSH gateways only

    with forwarded(TunnelSpec.from_json("gateway", tunnel), Path(tempfile.gettempdir()) / "gpustack-tunnels") as url:
        yield url


def call(props: dict[str, Any], method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    with reach(props) as url:
        return http.call(method, url, path, props["admin_token"], body, timeout=timeout, ca=control_ca(props))


def control_ca(props: dict[str, Any]) -> str | None:
    """The gateway's own CA (PEM) when its control API is served over TLS (`control_ca` input,
    from the stack's state): the only CA the calls trust (runtime/gateway/control_tls.py)."""
    return str(props["control_ca"]) if props.get("control_ca") else None


def _unreachable(exc: RuntimeApiError) -> bool:
    """Nothing answered (still booting), as opposed to an HTTP answer such as a refused token."""
    return not isinstance(exc.__cause__, urllib.error.HTTPError) or exc.__cause__.code in (502, 503, 504)


def await_controller(url: str, admin_token: str, wait: float,
                     report: Callable[[str], None] = pulumi.log.info, ca: str | None = None) -> None:
    """Return once the control API answers; a cloud gateway answers only minutes after its instance
    exists (image boot, runtime install). Each failed try is reported; past `wait` seconds, or on an
    HTTP error that waiting cannot fix, it raises."""
    deadline, attempt = time.monotonic() + wait, 0
    while True:
        try:
            http.call("GET", url, "/control/health", admin_token, timeout=10, ca=ca)
            return
        except RuntimeApiError as exc:
            attempt += 1
            delay = min(2.0 * attempt, 15.0)
            if not _unreachable(exc) or time.monotonic() + delay > deadline:
                raise RuntimeApiError(f"the gateway's control API at {url} did not answer within {wait:.0f} s "
                                      f"({attempt} tries): {exc}") from None
            report(f"waiting for the gateway's control API at {url} (try {attempt}, {deadline - time.monotonic():.0f} s "
                   f"left): {exc}")
            time.sleep(delay)


class ServiceNotReady(RuntimeApiError):
    """A service did not get ready (or its rollout failed) while `up` waited."""


class _Registration(ResourceProvider):
    """One object PUT to the control API under a name; subclasses say where and what.

    Every input but the name and the controller's URL is updated in place (PUT again); those two
    replace the registration, deleting the old one first since both would claim the same name.
    """

    serialize_as_secret_always = False
    collection = ""  # "agents", "services", "routers"
    updatable: tuple[str, ...] = ("admin_token", "control_ca")

    def name(self, props: dict[str, Any]) -> str:
        raise TypeError(f"{type(self).__name__} must say which input names the registration")

    def body(self, props: dict[str, Any]) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} must say what it registers")

    def path(self, props: dict[str, Any]) -> str:
        return f"/control/{self.collection}/{urllib.parse.quote(self.name(props), safe='')}"

    def put(self, props: dict[str, Any]) -> dict[str, Any]:
        with reach(props) as url:
            if props.get("control_wait"):
                await_controller(url, props["admin_token"], float(props["control_wait"]), ca=control_ca(props))
            http.call("PUT", url, self.path(props), props["admin_token"], self.body(props), ca=control_ca(props))
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=self.name(props), outs=self.put(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            call(props, "GET", self.path(props))
        except RuntimeApiError:
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if self.name(olds) != self.name(news) or olds.get("control_url") != news.get("control_url"):
            return DiffResult(changes=True, replaces=["name", "control_url"], delete_before_replace=True)
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in self.updatable))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.put(news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            call(props, "DELETE", self.path(props))
        except http.NotFound:
            pass


class AgentRegistrationProvider(_Registration):
    collection = "agents"
    updatable = ("agent_url", "agent_token", "labels", "admin_token", "tunnel", "control_ca")

    def name(self, props: dict[str, Any]) -> str:
        return str(props["name"])

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        # The controller answers once the host's replicas run elsewhere and the old ones stopped.
        try:
            call(props, "DELETE", self.path(props), timeout=READY_TIMEOUT)
        except http.NotFound:
            pass

    def body(self, props: dict[str, Any]) -> dict[str, Any]:
        body = {"url": props["agent_url"], "token": props["agent_token"], "labels": props.get("labels") or {}}
        if props.get("tunnel"):
            body["tunnel"] = props["tunnel"]
        return body

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # GET of one agent is not part of the API: the list is read and searched.
        try:
            agents = call(props, "GET", "/control/agents")
        except RuntimeApiError:
            return ReadResult(id_=None, outs={})
        known = {a["name"]: a for a in agents}
        if id_ not in known or known[id_].get("url") != props.get("agent_url"):
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs=props)


class AgentRegistration(Resource, module="control", name="AgentRegistration"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(AgentRegistrationProvider(), name, props, opts)


def _wait_ready(props: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the service's status until every group has its replicas ready, or the rollout failed."""
    name = props["definition"]["name"]
    deadline = time.monotonic() + timeout
    with reach(props) as url:
        return _poll_ready(name, url, props["admin_token"], deadline, timeout, control_ca(props))


def _poll_ready(name: str, url: str, admin_token: str, deadline: float, timeout: float,
                ca: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = http.call("GET", url, f"/control/services/{urllib.parse.quote(name, safe='')}", admin_token, ca=ca)
        rollout = status.get("rollout") or {}
        if rollout.get("state") == "failed":
            raise ServiceNotReady(f"service {name}: rollout failed: {rollout.get('message', 'new replicas did not get ready')}; "
                                  "the previous version keeps serving")
        groups = status.get("groups", [])
        _fail_fast(name, groups)
        if groups and all(g.get("ready", 0) >= g.get("desired", 0) for g in groups) and not rollout.get("state") == "running":
            return status
        cancel.wait(0.5)
    waiting = ", ".join(f"{g['name']} {g.get('ready', 0)}/{g.get('desired', 0)} ready" for g in status.get("groups", []))
    raise ServiceNotReady(f"service {name} not ready after {timeout:.0f} s ({waiting or 'no status'}); see `gpustack-iac status` and `gpustack-iac logs {name}`")


def _fail_fast(name: str, groups: list[dict[str, Any]]) -> None:
    """Stop waiting, with the controller's reason, when a group cannot get ready by waiting."""
    for g in groups:
        message = str(g.get("message") or "")
        # An agent not reached yet (just registered) or briefly unreachable is no verdict on capacity.
        if g.get("no_capacity") and not any(w in message for w in TRANSIENT_NO_CAPACITY):
            raise ServiceNotReady(f"service {name} group {g['name']}: {g.get('message') or 'no capacity'}")
        if int(g.get("crash_streak") or 0) >= CRASH_LOOP:
            raise ServiceNotReady(f"service {name} group {g['name']}: crash loop: {g.get('message') or 'replicas keep exiting'}; "
                                  f"see `gpustack-iac logs {name} --group {g['name']}`")


class ServiceRegistrationProvider(_Registration):
    """Registers a service and waits (by default) until its replicas are ready or its rollout failed."""

    collection = "services"
    updatable = ("definition", "admin_token", "wait", "ready_timeout", "control_ca")

    def name(self, props: dict[str, Any]) -> str:
        return str(props["definition"]["name"])

    def body(self, props: dict[str, Any]) -> dict[str, Any]:
        return dict(props["definition"])

    def put(self, props: dict[str, Any]) -> dict[str, Any]:
        with reach(props) as url:
            if props.get("control_wait"):
                await_controller(url, props["admin_token"], float(props["control_wait"]), ca=control_ca(props))
            answer = http.call("PUT", url, self.path(props), props["admin_token"], self.body(props), ca=control_ca(props))
        if props.get("wait", True):
            _wait_ready(props, float(props.get("ready_timeout") or READY_TIMEOUT))
        return {**props, "endpoint": answer.get("endpoint", "")}

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            status = call(props, "GET", self.path(props))
        except RuntimeApiError:
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs={**props, "endpoint": status.get("endpoint", props.get("endpoint", ""))})


class ServiceRegistration(Resource, module="control", name="ServiceRegistration"):
    if TYPE_CHECKING:
        endpoint: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ServiceRegistrationProvider(), name, {"endpoint": None, **props}, opts)


class RouterRegistrationProvider(_Registration):
    """A model alias served by several services; the alias names the registration."""

    collection = "routers"
    updatable = ("definition", "admin_token", "control_ca")

    def name(self, props: dict[str, Any]) -> str:
        return str(props["definition"]["name"])

    def body(self, props: dict[str, Any]) -> dict[str, Any]:
        return dict(props["definition"])


class RouterRegistration(Resource, module="control", name="RouterRegistration"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RouterRegistrationProvider(), name, props, opts)
