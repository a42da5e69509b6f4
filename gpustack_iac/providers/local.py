"""The local backend: agents and a gateway as processes on this machine.

Each resource keeps its files (token, port, logs, the runtime's own state) in a directory
given as an input, and keeps that directory across a re-create: after a reboot, `up`
starts the processes again on the same ports with the same tokens, so the endpoint and
the token a user already has keep working. Only `delete` removes the directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime import envpolicy, procs, supervised
from gpustack_iac.runtime.agent.offline import stop_all_replicas
from gpustack_iac.runtime.auth import new_token, read_token_file, write_token_file

ACME_START_TIMEOUT = 180.0  # issuance waits for the ACME server's validation
START_TIMEOUT = 60.0


def _free_port(preferred: int | None) -> int:
    """`preferred` when it can be bound on loopback, else a fresh free port."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeApiError("no free port on 127.0.0.1")


def _token(path: Path) -> str:
    if path.exists():
        return read_token_file(path)
    token = new_token()
    write_token_file(path, token)
    return token


def _remembered_port(path: Path, key: str) -> int | None:
    data = procs.read_port_file(path)
    value = data.get(key) if data else None
    return int(value) if value else None


def _alive(props: dict[str, Any]) -> bool:
    return procs.is_alive(int(props.get("pid") or 0), props.get("create_time"))


def _adopt_or_start(argv: list[str], paths: supervised.Paths, ports: dict[str, int],
                    timeout: float = START_TIMEOUT, bound_by_daemon: tuple[str, ...] = ()) -> supervised.Supervised:
    """The daemon of this resource: the one already running for its state dir (a resumed or repeated
    `up`, a lost checkpoint), else a new one under a watchdog. Never a second copy. The watchdog holds
    every port and hands it down, except `bound_by_daemon` (HAProxy binds its own ports)."""
    listen = {name: ("127.0.0.1", port) for name, port in ports.items() if name not in bound_by_daemon}
    return supervised.adopt_or_start(argv, paths, listen=listen, env=envpolicy.daemon_env(os.environ),
                                     timeout=timeout)


PORT_ATTEMPTS = 3


def _start_on_ports(build: Callable[[dict[str, int]], list[str]], pick: Callable[[], dict[str, int]],
                    paths: supervised.Paths, timeout: float = START_TIMEOUT,
                    bound_by_daemon: tuple[str, ...] = ()) -> supervised.Supervised:
    """`_adopt_or_start` of the daemon `build` makes for the ports `pick` chooses, picked again when one
    was taken between the pick and the watchdog's bind (any process's outgoing connection can take a
    port just found free; seen in a full test run). A port the user fixed is picked the same each time."""
    attempt = 1
    while True:
        ports = pick()
        try:
            return _adopt_or_start(build(ports), paths, ports, timeout, bound_by_daemon)
        except supervised.PortInUse:
            if attempt >= PORT_ATTEMPTS:
                raise
            attempt += 1


def _stop(root: Path, name: str, props: dict[str, Any]) -> None:
    """Stop the watchdog and its daemon, and the process the state recorded (an older, unsupervised one)."""
    recorded = (int(props.get("pid") or 0), props.get("create_time"))
    supervised.stop(supervised.Paths.in_dir(root, name), grace=10.0, also=recorded)


def _replace_if_changed(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...]) -> DiffResult:
    replaces = [k for k in keys if olds.get(k) != news.get(k)]
    return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=True)


class _ProcessProvider(ResourceProvider):
    """A process on this machine, identified by pid and create_time (pids are reused)."""

    serialize_as_secret_always = False

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not _alive(props):
            return ReadResult(id_=None, outs={})
        return ReadResult(id_=id_, outs=props)


class AgentProvider(_ProcessProvider):
    """One host of a local fleet: an agent process with its own token, state dir and log file."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        root = Path(props["state_dir"])
        root.mkdir(parents=True, exist_ok=True)
        token_file = root / "agent.token"
        token = _token(token_file)
        paths = supervised.Paths.in_dir(root, "agent")

        def argv(ports: dict[str, int]) -> list[str]:
            return [sys.executable, "-m", "gpustack_iac.runtime.agent", "--host", "127.0.0.1", "--port", str(ports["port"]),
                    "--token-file", str(token_file), "--state-dir", str(root / "agent"),
                    "--port-file", str(paths.port_file), "--name", str(props["name"])]

        info = _start_on_ports(argv, lambda: {"port": _free_port(_remembered_port(paths.port_file, "port"))}, paths)
        port = int(info.ports["port"])
        outs = {**props, "url": f"http://127.0.0.1:{port}", "port": port, "pid": info.pid,
                "create_time": info.create_time, "token": token}
        return CreateResult(id_=str(props["name"]), outs=outs)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A dead process is found by refresh (read reports it gone, and the engine plans a create that
        # re-adopts the state dir); diff trusts the state, as terraform does with -refresh=false.
        changed = _replace_if_changed(olds, news, ("name", "state_dir"))
        if changed.changes:
            return changed
        return DiffResult(changes=olds.get("labels") != news.get("labels"))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**olds, "labels": news.get("labels")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        # The agent leaves replicas running when it stops (so a restart loses nothing); a deleted host
        # must leave no orphan, so the replicas it recorded are stopped too, even if the agent is dead.
        _stop(Path(props["state_dir"]), "agent", props)
        stop_all_replicas(Path(props["state_dir"]) / "agent", grace=5.0)
        shutil.rmtree(props["state_dir"], ignore_errors=True)


class Agent(Resource, module="local", name="Agent"):
    # Output annotations only for type checkers: at run time the SDK inspects class annotations per
    # resource, which costs time in large stacks.
    if TYPE_CHECKING:
        url: pulumi.Output[str]
        token: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["token"])
        super().__init__(AgentProvider(), name, {"url": None, "token": None, **props},
                         pulumi.ResourceOptions.merge(opts, secret))


def _tls_argv(tls: dict[str, Any], port: int) -> list[str]:
    """The gateway's TLS options from the configuration's certificate (spec.models Certificate)."""
    argv = ["--tls-port", str(port), "--certificate", str(tls["type"])]
    if tls["type"] == "files":
        argv += ["--cert-file", str(tls["cert_file"]), "--key-file", str(tls["key_file"])]
    if tls["type"] == "lets-encrypt":
        argv += ["--acme-directory", str(tls["directory"]), "--acme-http-port", str(tls.get("http_port") or 80)]
        if tls.get("email"):
            argv += ["--acme-email", str(tls["email"])]
        if tls.get("ca_bundle"):
            argv += ["--acme-ca-bundle", str(tls["ca_bundle"])]
    return argv


class GatewayProvider(_ProcessProvider):
    """A local gateway: one process serving the data plane and the controller's control API."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        root = Path(props["state_dir"])
        root.mkdir(parents=True, exist_ok=True)
        token_file, admin_file = root / "service.token", root / "admin.token"
        token, admin_token = _token(token_file), _token(admin_file)
        paths = supervised.Paths.in_dir(root, "gateway")
        wanted = props.get("port")
        data_plane = str(props.get("data_plane") or "python")
        tls = props.get("tls") or None

        def pick() -> dict[str, int]:
            ports = {"port": _free_port(wanted or _remembered_port(paths.port_file, "port")),
                     "control_port": _free_port(_remembered_port(paths.port_file, "control_port"))}
            if tls:
                ports["tls_port"] = _free_port(_remembered_port(paths.port_file, "tls_port"))
            return ports

        def argv(ports: dict[str, int]) -> list[str]:
            args = [sys.executable, "-m", "gpustack_iac.runtime.gateway", "--host", "127.0.0.1", "--port", str(ports["port"]),
                    "--control-port", str(ports["control_port"]), "--token-file", str(token_file),
                    "--admin-token-file", str(admin_file), "--state-dir", str(root / "controller"),
                    "--port-file", str(paths.port_file)]
            if props.get("domain"):
                args += ["--domain", str(props["domain"])]
            args += ["--data-plane", data_plane]
            return args + (_tls_argv(tls, ports["tls_port"]) if tls else [])

        # ACME issuance happens before the gateway reports its ports: give it the validation's time.
        timeout = ACME_START_TIMEOUT if tls and tls.get("type") == "lets-encrypt" else START_TIMEOUT
        # HAProxy cannot take a socket the watchdog hands down: with it the gateway binds its data-plane
        # ports itself (a restart then refuses connections until it listens again).
        own = ("port", "tls_port") if data_plane != "python" else ()
        info = _start_on_ports(argv, pick, paths, timeout, own)
        if info.adopted and wanted and int(info.ports["port"]) != int(wanted):
            # A gateway left from an earlier configuration (lost checkpoint) on another port: replace it.
            _stop(root, "gateway", {})
            info = _start_on_ports(argv, pick, paths, timeout, own)
        port, control_port = int(info.ports["port"]), int(info.ports["control_port"])
        url = f"http://127.0.0.1:{port}"
        if tls:
            url = f"https://127.0.0.1:{int(info.ports['tls_port'])}"
        outs = {**props, "url": url, "control_url": f"http://127.0.0.1:{control_port}",
                "pid": info.pid, "create_time": info.create_time, "token": token, "admin_token": admin_token}
        return CreateResult(id_=str(props["name"]), outs=outs)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return _replace_if_changed(olds, news, ("name", "state_dir", "domain", "port", "tls", "data_plane"))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        _stop(Path(props["state_dir"]), "gateway", props)
        shutil.rmtree(props["state_dir"], ignore_errors=True)


class Gateway(Resource, module="local", name="Gateway"):
    if TYPE_CHECKING:
        url: pulumi.Output[str]
        control_url: pulumi.Output[str]
        token: pulumi.Output[str]
        admin_token: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["token", "admin_token"])
        outputs = {"url": None, "control_url": None, "token": None, "admin_token": None}
        super().__init__(GatewayProvider(), name, {**outputs, **props}, pulumi.ResourceOptions.merge(opts, secret))
