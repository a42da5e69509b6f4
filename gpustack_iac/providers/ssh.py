"""The SSH backend: one dynamic resource per fleet host, reached and provisioned with fabric.

`create` connects (host key verified), runs the preflight checks, uploads a wheelhouse built on
this machine, installs the agent in a venv under the install directory (default `~/.gpustack`),
starts it under supervision (systemd where it is PID 1 and we may use it, else the detached
watchdog) bound to 127.0.0.1 on the host, and returns the host's facts. A failed create removes
what it installed before reporting the one-line error. `read` says whether the agent is alive and
refreshes the facts; `update` re-installs when the package changes; `delete` stops the agent and
every replica it recorded and removes the install directory.

The agent's token reaches the host only through SFTP into a 0600 file; it is never on a command
line (where `ps` would show it) nor in a world-readable file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from fabric import Connection
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from gpustack_iac.errors import GpustackError
from gpustack_iac.providers import sshhost, wheelhouse
from gpustack_iac.providers.sshconn import SshHostError, SshTarget, SshTrustError, connect
from gpustack_iac.runtime.auth import new_token

# Changing one of these is another host (or another install): delete the old one first.
_REPLACES = ("hostname", "port", "user", "install_dir", "name")


def _layout(props: dict[str, Any]) -> sshhost.HostLayout:
    return sshhost.HostLayout.of(str(props.get("install_dir") or "~/.gpustack"), str(props["name"]))


def _tunnel(props: dict[str, Any], port: int, conn: Connection, listen: str = "127.0.0.1") -> dict[str, Any]:
    """What the controller needs to hold a port forward to the agent (no secrets: keys stay paths).
    The host keys (the host's and its jump host's) are the ones verified here, so the controller
    trusts exactly those keys."""
    jump = props.get("proxy_jump") or None
    if jump and isinstance(conn.gateway, Connection):
        jump = {**jump, "host_key_line": _host_key_line(conn.gateway)}
    return {"hostname": props["hostname"], "port": int(props.get("port") or 22), "user": props.get("user"),
            "identity_file": props.get("identity_file"), "host_key_line": _host_key_line(conn), "remote_port": port,
            "proxy_jump": jump, "remote_host": listen, "network": props.get("network")}


def _host_key_line(conn: Connection) -> str:
    key = conn.client.get_transport().get_remote_server_key()
    return f"{key.get_name()} {key.get_base64()}"


class HostProvider(ResourceProvider):
    serialize_as_secret_always = False

    def _install(self, conn: Connection, target: SshTarget, props: dict[str, Any], token: str | None,
                 port: int | None) -> dict[str, Any]:
        label, layout = target.label, _layout(props)
        pf = sshhost.preflight(conn, label, layout)
        try:
            wheels = wheelhouse.build(Path(props["cache_dir"]), pf.python_version, pf.arch)
        except GpustackError as exc:
            raise SshHostError(f"host {label}: {exc}") from None
        try:
            sshhost.upload_wheels(conn, label, layout, pf, wheels)
            previous = sshhost.installed(conn, pf)
            if previous.get("package") != wheels.key:
                sshhost.install(conn, label, layout, pf, wheels)
            token = token or new_token()
            sshhost.write_secret(conn, pf, "agent.token", token)
            # With a private network the agent (and its replicas' URLs) use the host's address in it,
            # so hosts on that network reach each other directly; otherwise loopback only.
            listen = (sshhost.private_address(conn, label, layout, str(props["network"]), props.get("internal_ip"))
                      if props.get("network") else "127.0.0.1")
            port = port or int(previous.get("port") or 0) or sshhost.pick_port(conn, label, layout, listen)
            how = sshhost.start(conn, label, layout, pf, port, target.user or conn.user, listen)
            sshhost.record_install(conn, pf, {"package": wheels.key, "port": port, "supervisor": how, "listen": listen})
            facts = sshhost.facts(conn, label, layout, pf.install_dir)
        except BaseException:
            # Nothing half-installed: what this create added goes (a directory that was there before stays).
            try:
                sshhost.uninstall(conn, label, layout, pf.install_dir, "systemd" if pf.systemd and (pf.root or pf.sudo) else "watchdog",
                                  remove_dir=not pf.existed)
            except GpustackError:
                pass
            raise
        facts["gpus"] = facts["gpus"] or pf.gpus
        return {**props, "install_path": pf.install_dir, "agent_port": port, "supervisor": how, "package": wheels.key,
                "token": token, "facts": facts, "os": f"{pf.os} {pf.arch}", "python": pf.python_version,
                "tunnel": _tunnel(props, port, conn, listen), "url": f"http://{listen}:{port}", "alive": True}

    def create(self, props: dict[str, Any]) -> CreateResult:
        target = SshTarget.from_props(props)
        with connect(target) as conn:
            outs = self._install(conn, target, props, None, None)
        return CreateResult(id_=str(props["name"]), outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SshTarget.from_props(props)
        try:
            with connect(target) as conn:
                alive = sshhost.agent_alive(conn, target.label, str(props.get("install_path")), str(props.get("supervisor")),
                                            _layout(props).unit)
                if not alive:
                    return ReadResult(id_=None, outs={})  # planned as a create, which re-installs and starts it
                facts = sshhost.facts(conn, target.label, _layout(props), str(props["install_path"]))
        except SshTrustError:
            raise  # a wrong host key or refused login is not "down": `up` must fail on it, not log it
        except SshHostError:
            # Unreachable is not gone: the host may come back; the controller re-places its replicas meanwhile.
            return ReadResult(id_=id_, outs={**props, "alive": False})
        return ReadResult(id_=id_, outs={**props, "facts": facts, "alive": True})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in _REPLACES if olds.get(k) != news.get(k)]
        if replaces:
            return DiffResult(changes=True, replaces=replaces, delete_before_replace=True)
        keys = ("package_key", "identity_file", "known_hosts", "host_key", "host_key_policy", "proxy_jump", "labels", "network", "internal_ip")
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # A new package, or another network (the agent listens elsewhere): re-install and restart.
        if all(olds.get(k) == news.get(k) for k in ("package_key", "network", "internal_ip")):
            outs = {**olds, **{k: v for k, v in news.items() if k not in ("url", "token")}}
            outs["tunnel"] = {**olds["tunnel"], **{k: outs.get(k) for k in ("identity_file", "user")}}
            if olds.get("proxy_jump") != news.get("proxy_jump"):
                # Another jump host: the controller's tunnels need its key, verified now.
                with connect(SshTarget.from_props(news)) as conn:
                    outs["tunnel"] = _tunnel(news, int(olds["agent_port"]), conn,
                                             str(olds["tunnel"].get("remote_host") or "127.0.0.1"))
            return UpdateResult(outs=outs)
        target = SshTarget.from_props(news)
        with connect(target) as conn:
            # Same token and port: the controller's registration and tunnel stay valid across the upgrade.
            layout = _layout(olds)
            # Replicas keep running while the agent is replaced; the new agent re-adopts them.
            sshhost.stop_agent(conn, target.label, layout, str(olds["install_path"]), str(olds.get("supervisor")))
            outs = self._install(conn, target, news, str(olds["token"]), int(olds["agent_port"]))
        return UpdateResult(outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target = SshTarget.from_props(props)
        with connect(target) as conn:
            sshhost.uninstall(conn, target.label, _layout(props), str(props["install_path"]), str(props.get("supervisor")),
                              remove_dir=True)


class Host(Resource, module="ssh", name="Host"):
    if TYPE_CHECKING:
        url: pulumi.Output[str]
        token: pulumi.Output[str]
        facts: pulumi.Output[dict[str, Any]]
        tunnel: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["token"])
        outputs = {"url": None, "token": None, "facts": None, "tunnel": None}
        super().__init__(HostProvider(), name, {**outputs, **props}, pulumi.ResourceOptions.merge(opts, secret))
