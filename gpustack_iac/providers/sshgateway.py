"""A gateway on an SSH fleet host: installed beside that host's agent, reached from here through SSH.

Installed the way the agent is (providers/ssh.py): a wheelhouse built here (the agent's set plus
the gateway's own dependencies), uploaded, unpacked into a venv of its own under
`<install_dir>/gateway/` (so re-installing the agent never breaks it), started under the watchdog,
bound to 127.0.0.1 on the host. It is placed in the directory the fleet's `Host` resource made,
which this one depends on. Its two
tokens, and the fleet's SSH key that its controller needs to hold tunnels to the other hosts'
agents, reach the host only over SFTP into files made 0600 before they are written. Host keys are
not uploaded as a known_hosts file: each agent registration carries the key verified when that host
was provisioned, and the controller trusts exactly that one (runtime/tunnels.py).

Everything lives under `<install_dir>/gateway/`; `delete` stops the watchdog (and with it the
gateway, whose tunnels die with it) and removes that directory.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from fabric import Connection
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from gpustack_iac.errors import GpustackError
from gpustack_iac.providers import sshhost, wheelhouse
from gpustack_iac.providers.sshconn import SshHostError, SshTarget, SshTrustError, connect
from gpustack_iac.runtime.auth import new_token

START_TIMEOUT = 60.0
KEY_NAMES = ("identity", "jump_identity")  # the fleet's keys uploaded for the controller's tunnels


def _dir(conn: Connection, label: str, install_dir: str) -> str:
    """The gateway's directory on the host, absolute (the agent's install directory must exist)."""
    layout = sshhost.HostLayout.of(install_dir, "gateway")
    out = sshhost.run(conn, label, f"cd {layout.root} && pwd", "finding the agent's install directory (install the fleet first)")
    return out.strip() + "/gateway"


def _write_secret(conn: Connection, path: str, value: bytes) -> None:
    with conn.sftp().open(path, "w") as f:
        f.chmod(0o600)
        f.write(value)


def gateway_argv(root: str, venv_python: str, port: int, control_port: int, domain: str | None) -> list[str]:
    argv = [venv_python, "-m", "gpustack_iac.runtime.gateway", "--host", "127.0.0.1", "--port", str(port),
            "--control-port", str(control_port), "--token-file", f"{root}/service.token",
            "--admin-token-file", f"{root}/admin.token", "--state-dir", f"{root}/controller",
            "--port-file", f"{root}/run/gateway.port.json"]
    return argv + (["--domain", domain] if domain else [])


def _watchdog_pid(root: str) -> str:
    """Shell: the gateway watchdog's pid, from its JSON pid file (runtime/watchdog.py)."""
    python = shlex.quote(root + "/venv/bin/python")
    return (f"$({python} -c 'import json, sys; print(json.load(open(sys.argv[1]))[\"pid\"])' "
            f"{shlex.quote(root)}/run/watchdog.json 2>/dev/null)")


def _stop_script(root: str) -> str:
    return f"""
if [ -f {shlex.quote(root)}/run/watchdog.json ]; then P={_watchdog_pid(root)}; kill -TERM "$P" 2>/dev/null
  for i in $(seq 1 150); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$P" 2>/dev/null; fi
"""


def _remove(conn: Connection, label: str, root: str) -> None:
    sshhost.run(conn, label, _stop_script(root) + f"rm -rf {shlex.quote(root)}\n", "removing the gateway", timeout=60)


class GatewayHostProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        target = SshTarget.from_props(props)
        label = target.label
        install_dir = str(props.get("install_dir") or "~/.gpustack")
        with connect(target) as conn:
            root = _dir(conn, label, install_dir)
            python = f"{root}/venv/bin/python"
            try:
                layout = sshhost.HostLayout.of(install_dir, str(props["name"]))
                pf = sshhost.preflight(conn, label, layout)
                try:
                    wheels = wheelhouse.build(Path(props["cache_dir"]), pf.python_version, pf.arch, gateway=True)
                except GpustackError as exc:
                    raise SshHostError(f"host {label}: {exc}") from None
                sshhost.run(conn, label, f"mkdir -p {shlex.quote(root)}/wheels && chmod 700 {shlex.quote(root)}",
                            "creating the gateway's directory")
                sftp = conn.sftp()
                for wheel in wheels.files():
                    sftp.put(str(wheel), f"{root}/wheels/{wheel.name}")
                sshhost.install(conn, label, layout, pf, wheels, sub="gateway", what="the gateway")
                outs = self._install(conn, label, root, python, props)
            except BaseException:
                try:
                    _remove(conn, label, root)  # nothing half-installed
                except SshHostError:
                    pass
                raise
            key = conn.client.get_transport().get_remote_server_key()
            host_key_line = f"{key.get_name()} {key.get_base64()}"
        tunnel = {"hostname": props["hostname"], "port": int(props.get("port") or 22), "user": props.get("user"),
                  "identity_file": props.get("identity_file"), "host_key_line": host_key_line,
                  "remote_port": outs["control_port"], "proxy_jump": props.get("proxy_jump")}
        return CreateResult(id_=str(props["name"]), outs={**props, **outs, "tunnel": tunnel, "install_path": root})

    def _install(self, conn: Connection, label: str, root: str, python: str, props: dict[str, Any]) -> dict[str, Any]:
        sshhost.run(conn, label, f"mkdir -p {shlex.quote(root)}/run {shlex.quote(root)}/ssh && chmod 700 {shlex.quote(root)} "
                                 f"{shlex.quote(root)}/ssh", "preparing the gateway's directory")
        token, admin_token = new_token(), new_token()
        _write_secret(conn, f"{root}/service.token", token.encode())
        _write_secret(conn, f"{root}/admin.token", admin_token.encode())
        keys: dict[str, str] = {}
        for name, local in (props.get("keys") or {}).items():
            if name in KEY_NAMES and local:
                _write_secret(conn, f"{root}/ssh/{name}", Path(local).expanduser().read_bytes())
                keys[name] = f"{root}/ssh/{name}"
        pick = f"{shlex.quote(python)} -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'"
        port = int(sshhost.run(conn, label, pick, "choosing the gateway's port").strip())
        control_port = int(sshhost.run(conn, label, pick, "choosing the gateway's control port").strip())
        watchdog = [python, "-m", "gpustack_iac.runtime.watchdog", "--pid-file", f"{root}/run/watchdog.json",
                    "--child-pid-file", f"{root}/run/gateway.json", "--",
                    *gateway_argv(root, python, port, control_port, props.get("domain") or None)]
        # As for the agent: its own session, every descriptor redirected, so the SSH session can end.
        sshhost.run(conn, label, f"(cd {shlex.quote(root)} && exec $(command -v setsid) {' '.join(shlex.quote(a) for a in watchdog)}) "
                                 f"</dev/null >>{shlex.quote(root + '/gateway.log')} 2>&1 &", "starting the gateway (watchdog)", timeout=30)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = sshhost.read_file(conn, f"{root}/run/gateway.port.json")
            if text and int(json.loads(text).get("control_port", 0)) == control_port:
                return {"url": f"http://127.0.0.1:{port}", "control_url": f"http://127.0.0.1:{control_port}",
                        "data_port": port, "control_port": control_port, "token": token, "admin_token": admin_token,
                        "key_paths": keys}
            time.sleep(0.2)
        log = sshhost.read_file(conn, f"{root}/gateway.log") or ""
        raise SshHostError(f"host {label}: the gateway did not start within {START_TIMEOUT:g} s"
                           + (f": {log.strip().splitlines()[-1]}" if log.strip() else ""))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SshTarget.from_props(props)
        try:
            with connect(target) as conn:
                alive = conn.run(f"kill -0 \"{_watchdog_pid(str(props['install_path']))}\" 2>/dev/null",
                                 hide=True, warn=True, in_stream=False).exited == 0
        except SshTrustError:
            raise  # a wrong host key or refused login is not "down": the command must fail on it
        except SshHostError:
            return ReadResult(id_=id_, outs=props)
        return ReadResult(id_=id_ if alive else None, outs=props if alive else {})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("hostname", "port", "user", "install_dir", "name", "domain", "keys")
        replaces = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=True)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target = SshTarget.from_props(props)
        with connect(target) as conn:
            _remove(conn, target.label, str(props["install_path"]))


class GatewayHost(Resource, module="ssh", name="GatewayHost"):
    if TYPE_CHECKING:
        url: pulumi.Output[str]
        control_url: pulumi.Output[str]
        token: pulumi.Output[str]
        admin_token: pulumi.Output[str]
        tunnel: pulumi.Output[dict[str, Any]]
        key_paths: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["token", "admin_token"])
        outputs = {"url": None, "control_url": None, "token": None, "admin_token": None, "tunnel": None, "key_paths": None}
        super().__init__(GatewayHostProvider(), name, {**outputs, **props}, pulumi.ResourceOptions.merge(opts, secret))
