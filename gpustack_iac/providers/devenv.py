"""A dev environment as a resource: a run-once replica (restart on failure) on a fitting fleet
host, which runs `init` and then an sshd that takes the user's public key.

Talks to the agent API only, so any backend's agents can host it; the files it keeps here
(the client's known_hosts entry) are what `gpustack-iac ssh` needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime import sync_client as http
from gpustack_iac.runtime.tunnels import forwarded_agent_url
from gpustack_iac.runtime.controller.model import PlacementPolicy, Resources
from gpustack_iac.runtime.controller.placement import AgentView, HostFacts, fit, label_mismatch
from gpustack_iac.runtime.devenv import READY_MARKER

READY_TIMEOUT = 600.0  # init commands (pip installs) may take a while
SSH_DEVENV_ROOT = ".gpustack-devenv"  # under the agent user's home on an SSH fleet host
IDE_SCHEMES = {"vscode": "vscode", "cursor": "cursor", "windsurf": "windsurf"}


class DevEnvironmentNotReady(RuntimeApiError):
    """The dev environment did not get to accept SSH connections."""


def ide_link(ide: str, name: str, path: str) -> str:
    return f"{IDE_SCHEMES.get(ide, ide)}://vscode-remote/ssh-remote+{name}{path}"


def ensure_identity(identity_file: Path) -> str:
    """The public key of `identity_file`, generating a key pair there when it does not exist."""
    if not identity_file.exists():
        identity_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpustack-iac", "-f", str(identity_file)],
                       check=True, stdin=subprocess.DEVNULL)
    return identity_file.with_name(identity_file.name + ".pub").read_text().strip()


def _resources(definition: dict[str, Any]) -> tuple[Resources, PlacementPolicy]:
    from pydantic import TypeAdapter

    return (TypeAdapter(Resources).validate_python(definition.get("resources") or {}),
            TypeAdapter(PlacementPolicy).validate_python(definition.get("placement") or {}))


def pick_host(definition: dict[str, Any], hosts: list[dict[str, Any]]) -> dict[str, Any]:
    resources, placement = _resources(definition)
    reasons = []
    for host in hosts:
        if definition.get("only_hosts") and host["name"] not in definition["only_hosts"]:
            reasons.append(f"{host['name']}: not the host of its volumes")
            continue
        why = label_mismatch(placement, host.get("labels") or {})
        if why:
            reasons.append(f"{host['name']}: {why}")
            continue
        try:
            with forwarded_agent_url(host["name"], host["url"], host.get("tunnel")) as url:
                if url is None:
                    raise RuntimeApiError("no SSH forward")
                facts = HostFacts.from_json(http.call("GET", url, "/v1/host", host["token"]))
        except RuntimeApiError:
            reasons.append(f"{host['name']}: unreachable")
            continue
        got = fit(resources, AgentView(name=host["name"], host=facts, labels=host.get("labels") or {}), [])
        if isinstance(got, str):
            reasons.append(f"{host['name']}: {got}")
            continue
        return host
    raise DevEnvironmentNotReady(f"dev environment {definition['name']}: no host fits ({'; '.join(reasons) or 'no hosts'})")


def _reach(host: dict[str, Any]) -> contextlib.AbstractContextManager[str | None]:
    return forwarded_agent_url(str(host["name"]), str(host["url"]), host.get("tunnel"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _replica_path(name: str) -> str:
    return f"/v1/replicas/{urllib.parse.quote(f'dev-{name}', safe='')}"


class DevEnvironmentProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        definition = props["definition"]
        root = Path(props["state_dir"])
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        public_key = ensure_identity(Path(props["identity_file"]))
        host = pick_host(definition, props["hosts"])
        with _reach(host) as url:
            if url is None:
                raise DevEnvironmentNotReady(f"dev environment {definition['name']}: host {host['name']} cannot be reached over SSH")
            return self._create(props, definition, root, public_key, host, url)

    def _create(self, props: dict[str, Any], definition: dict[str, Any], root: Path, public_key: str,
                host: dict[str, Any], url: str) -> CreateResult:
        name = definition["name"]
        try:  # a previous run of it (stopped for inactivity) still holds the id
            http.call("DELETE", url, _replica_path(name) + "?grace=10", host["token"], timeout=40)
        except http.NotFound:
            pass
        inactivity = definition.get("inactivity_duration") or 0
        tunnel = host.get("tunnel")
        if tunnel:
            # On an SSH host the sshd's files live in the agent user's home, and go when it stops;
            # its status is the replica's, read through the agent.
            where = f'"$HOME"/{SSH_DEVENV_ROOT}/{shlex.quote(name + "-" + _digest(str(root)))} --remove-dir'
        else:
            where = f'{shlex.quote(str(root / "sshd"))} --status-file {shlex.quote(str(root / "status.json"))}'
        command = (f'exec "$GPUSTACK_PYTHON" -m gpustack_iac.runtime.devenv --port "$PORT" '
                   f'--inactivity {float(inactivity):g} --dir {where}')
        env = dict(definition.get("env") or {})
        env.update(GPUSTACK_DEVENV_AUTHORIZED_KEYS=public_key, GPUSTACK_DEVENV_INIT=json.dumps(definition.get("init") or []),
                   GPUSTACK_DEVENV_ENV_NAMES=",".join(sorted(definition.get("env") or {})))
        # The configuration's directory is on this machine; on an SSH host only an absolute working_dir holds.
        working_dir = definition.get("remote_working_dir") if tunnel else definition.get("working_dir")
        spec = {"id": f"dev-{name}", "working_dir": working_dir, "service": name, "group": "dev-environment", "commands": [command], "env": env,
                "restart": "on-failure", "mounts": definition.get("mounts") or [],
                "labels": {"dev_environment": name}}
        http.call("POST", url, "/v1/replicas", host["token"], spec, timeout=120)
        address, port, host_key = self._wait_ready(host, url, name, float(props.get("ready_timeout") or READY_TIMEOUT))
        known_hosts = root / "known_hosts"
        lines = f"[{address}]:{port} {host_key}\n"
        jump = None
        if tunnel:
            # The sshd listens on the host's loopback: the client goes through the fleet's own SSH,
            # trusting the host key verified when the host was provisioned.
            jump = {"hostname": tunnel["hostname"], "port": int(tunnel.get("port") or 22), "user": tunnel.get("user"),
                    "identity_file": tunnel.get("identity_file"), "host_key_alias": f"gpustack-{host['name']}"}
            lines += f"gpustack-{host['name']} {tunnel['host_key_line']}\n"
        known_hosts.write_text(lines)
        outs = {**props, "host": host["name"], "address": address, "port": port, "known_hosts": str(known_hosts),
                "jump": jump, "login_user": (tunnel.get("user") if tunnel else None) or props.get("user"),
                "ide_link": (ide_link(definition["ide"], name, working_dir or "/")
                             if definition.get("ide") else None)}
        return CreateResult(id_=name, outs=outs)

    @staticmethod
    def _wait_ready(host: dict[str, Any], url: str, name: str, timeout: float) -> tuple[str, int, str]:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = http.call("GET", url, _replica_path(name) + "/logs?tail=500", host["token"]) or ""
            for line in str(text).splitlines():
                if READY_MARKER in line:
                    address, port, *key = line.split(READY_MARKER, 1)[1].split()
                    return address, int(port), " ".join(key)
            replica = http.call("GET", url, _replica_path(name), host["token"])
            if replica.get("finished_at") is not None or replica.get("state") == "failed":
                break
            time.sleep(0.3)
        tail = "\n".join(str(text).splitlines()[-20:])
        raise DevEnvironmentNotReady(f"dev environment {name} did not accept SSH within {timeout:.0f} s; its log:\n{tail}")

    def _host(self, props: dict[str, Any]) -> dict[str, Any] | None:
        return next((h for h in props.get("hosts") or [] if h["name"] == props.get("host")), None)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        host = self._host(props)
        if host is None:
            return ReadResult(id_=None, outs={})
        with _reach(host) as url:
            try:
                if url is None:
                    return ReadResult(id_=id_, outs=props)  # the SSH host is away: not gone
                replica = http.call("GET", url, _replica_path(props["definition"]["name"]), host["token"])
            except RuntimeApiError:
                return ReadResult(id_=None, outs={})
        # Stopped after its inactivity duration: gone, so the next `up` starts it again.
        if replica.get("finished_at") is not None:
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("definition", "state_dir", "identity_file") if olds.get(k) != news.get(k)]
        if replaces:
            return DiffResult(changes=True, replaces=replaces, delete_before_replace=True)
        return DiffResult(changes=olds.get("hosts") != news.get("hosts"))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**olds, "hosts": news["hosts"]})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        host = self._host(props)
        if host is None:
            return
        with _reach(host) as url:
            try:
                if url is not None:
                    http.call("DELETE", url, _replica_path(props["definition"]["name"]) + "?grace=10", host["token"], timeout=40)
            except http.NotFound:
                pass


class DevEnvironment(Resource, module="workload", name="DevEnvironment"):
    # For type checkers only (as in providers/file.py): the outputs `create` sets.
    if TYPE_CHECKING:
        host: pulumi.Output[str]
        address: pulumi.Output[str]
        port: pulumi.Output[int]
        known_hosts: pulumi.Output[str]
        ide_link: pulumi.Output[str]
        jump: pulumi.Output[dict[str, Any] | None]
        login_user: pulumi.Output[str | None]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["hosts"])
        outputs = {"host": None, "address": None, "port": None, "known_hosts": None, "ide_link": None, "jump": None,
                   "login_user": None}
        super().__init__(DevEnvironmentProvider(), name, {**outputs, **props}, pulumi.ResourceOptions.merge(opts, secret))
