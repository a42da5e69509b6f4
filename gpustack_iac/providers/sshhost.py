"""What runs on a fleet host over SSH: preflight, install, supervise, facts, uninstall.

Functions of an open fabric Connection and a `HostLayout` (where things live under the install
directory). Every failure is an SshHostError naming the host in one line; `providers/ssh.py`
undoes a half-done install before reporting it.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import time
from dataclasses import dataclass
from typing import Any

from fabric import Connection

from gpustack_iac.contract import progress
from gpustack_iac.providers.sshconn import SshHostError
from gpustack_iac.providers.wheelhouse import Wheelhouse

PYTHON_FLOOR = (3, 10)  # pyproject's requires-python
MIN_FREE_MB = 512  # venv + wheels + logs; replicas' own needs are the service's `disk`
START_TIMEOUT = 60.0
UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class HostLayout:
    """Paths on the host, as shell words (the install dir may start with $HOME)."""

    root: str  # e.g. "$HOME"/'.gpustack' — already quoted for the shell
    name: str

    @classmethod
    def of(cls, install_dir: str, name: str) -> HostLayout:
        if install_dir == "~" or install_dir.startswith("~/"):
            root = '"$HOME"' + (("/" + shlex.quote(install_dir[2:])) if install_dir[2:] else "")
        else:
            root = shlex.quote(install_dir)
        return cls(root=root, name=name)

    def path(self, *parts: str) -> str:
        return self.root + "/" + "/".join(shlex.quote(p) for p in parts)

    @property
    def unit(self) -> str:
        return f"gpustack-agent-{self.name}.service"


@dataclass(frozen=True)
class Preflight:
    os: str
    arch: str
    home: str
    python: str
    python_version: str
    install_dir: str  # absolute
    existed: bool
    free_mb: int
    writable: bool
    sudo: bool
    systemd: bool
    root: bool
    gpus: list[dict[str, Any]]
    cpus: int = 0
    memory_mib: int = 0
    # A container engine answered the login user's client (`docker info`, or Podman's remote client
    # at DOCKER_HOST), and the DOCKER_HOST that session had: the agent is started with it.
    engine: bool = False
    docker_host: str = ""


def run(conn: Connection, label: str, command: str, what: str, timeout: float = 120.0) -> str:
    """stdout of `command`, or SshHostError saying `what` failed (with the command's last error line)."""
    try:
        result = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except Exception as exc:  # invoke's CommandTimedOut, paramiko's SSHException, socket errors
        raise SshHostError(f"host {label}: {what} failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1:] or ''})") from None
    if result.exited != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise SshHostError(f"host {label}: {what} failed: {lines[-1] if lines else f'exit code {result.exited}'}")
    return str(result.stdout)


# Does a container engine answer the login user, as the agent's client will ask it
# (runtime/agent/engine.py): `docker`, else Podman's remote client at DOCKER_HOST, else local Podman
# for root only: a user's rootless `podman info` creates ~/.local/share/containers, and the
# preflight must leave nothing on the host (such a user points DOCKER_HOST at its podman.socket).
_ENGINE_PROBE = """echo "docker_host=$DOCKER_HOST"
if command -v docker >/dev/null 2>&1; then E="docker"; elif command -v podman >/dev/null 2>&1; then
  if [ -n "${DOCKER_HOST:-$CONTAINER_HOST}" ]; then E="podman --remote --url ${DOCKER_HOST:-$CONTAINER_HOST}"
  elif [ "$(id -u)" = 0 ]; then E=podman; fi
fi
T=$(command -v timeout >/dev/null 2>&1 && echo "timeout 15")
if [ -n "$E" ] && $T $E info >/dev/null 2>&1; then echo engine=1; fi"""


def preflight(conn: Connection, label: str, layout: HostLayout, check: bool = True) -> Preflight:
    """What the host is and has; with `check`, a host the agent cannot be installed on is an error."""
    d = layout.root
    script = f"""
echo "os=$(uname -s)"; echo "arch=$(uname -m)"; echo "home=$HOME"; echo "uid=$(id -u)"
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
PY=$(command -v python3 || true); echo "python=$PY"
if [ -n "$PY" ]; then "$PY" -c 'import sys, venv; print("pyver=%d.%d" % sys.version_info[:2])' 2>/dev/null; fi
D={d}; echo "dir=$D"; [ -e "$D" ] && echo existed=1
p="$D"; while [ ! -d "$p" ]; do p="${{p%/*}}"; [ -n "$p" ] || p=/; done
echo "free_kb=$(df -Pk "$p" | awk 'NR==2{{print $4}}')"; [ -w "$p" ] && echo writable=1
command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1 && echo sudo=1
echo "cpus=$(nproc 2>/dev/null)"; echo "mem_kb=$(awk '/^MemTotal:/{{print $2}}' /proc/meminfo 2>/dev/null)"
{_ENGINE_PROBE}
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu=/'; fi
true
"""
    facts: dict[str, str] = {}
    gpus = []
    for line in run(conn, label, script, "preflight").splitlines():
        key, _, value = line.partition("=")
        if key == "gpu":
            name, _, mem = value.rpartition(",")
            gpus.append({"name": name.strip(), "memory_mib": int(float(mem.strip() or 0))})
        elif key:
            facts[key] = value
    pf = Preflight(
        os=facts.get("os", ""), arch=facts.get("arch", ""), home=facts.get("home", ""), python=facts.get("python", ""),
        python_version=facts.get("pyver", ""), install_dir=facts.get("dir", ""), existed="existed" in facts,
        free_mb=int(facts.get("free_kb") or 0) // 1024, writable="writable" in facts, sudo="sudo" in facts,
        systemd=facts.get("pid1") == "systemd", root=facts.get("uid") == "0", gpus=gpus,
        cpus=int(facts.get("cpus") or 0), memory_mib=int(facts.get("mem_kb") or 0) // 1024,
        engine="engine" in facts, docker_host=facts.get("docker_host", ""),
    )
    if check:
        check_preflight(pf, label)
    return pf


def check_preflight(pf: Preflight, label: str) -> None:
    floor = ".".join(map(str, PYTHON_FLOOR))
    if pf.os != "Linux":
        raise SshHostError(f"host {label}: {pf.os or 'an unknown OS'} is not supported (fleet hosts run Linux)")
    if not pf.python:
        raise SshHostError(f"host {label}: no suitable Python: python3 is not on the PATH (Python {floor} or newer "
                           "with the venv module is needed; on Debian/Ubuntu: apt-get install python3 python3-venv)")
    if not pf.python_version:
        raise SshHostError(f"host {label}: no suitable Python: {pf.python} has no venv module "
                           "(on Debian/Ubuntu: apt-get install python3-venv)")
    if tuple(int(x) for x in pf.python_version.split(".")) < PYTHON_FLOOR:
        raise SshHostError(f"host {label}: no suitable Python: {pf.python} is {pf.python_version}, {floor} or newer is needed")
    if not pf.writable:
        hint = "sudo is available but installs run as the login user; choose an install_dir it owns" if pf.sudo else \
            "sudo needed but not available (sudo -n true failed)"
        raise SshHostError(f"host {label}: cannot write {pf.install_dir}: {hint}")
    if pf.free_mb < MIN_FREE_MB:
        raise SshHostError(f"host {label}: not enough disk: {pf.free_mb} MiB free under {pf.install_dir}, "
                           f"{MIN_FREE_MB} MiB needed")


def upload_wheels(conn: Connection, label: str, layout: HostLayout, pf: Preflight, wheels: Wheelhouse) -> None:
    remote = f"{pf.install_dir}/wheels"
    run(conn, label, f"mkdir -p {layout.path('wheels')} {layout.path('run')} {layout.path('logs')} && chmod 700 {layout.root}",
        "creating the install directory")
    sftp = conn.sftp()
    present = {a.filename: a.st_size for a in sftp.listdir_attr(remote)}
    # The package's own wheel keeps its name across source edits: always sent (it is small).
    send = [w for w in wheels.files()
            if present.get(w.name) != w.stat().st_size or w.name.startswith("gpustack_iac-")]
    total = sum(w.stat().st_size for w in send)
    with progress.activity(f"host {label}: uploading the wheelhouse ({len(send)} files)", total, "bytes") as act:
        for wheel in send:
            sent = [0]

            def moved(done: int, _size: int, sent: list[int] = sent) -> None:
                act.advance(done - sent[0])
                sent[0] = done

            sftp.put(str(wheel), f"{remote}/{wheel.name}", callback=moved)
            act.file_done()


# Unpacks the given wheels into the running (venv) interpreter with pypa's `installer`, in one process.
_INSTALL = """
import sys, sysconfig
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
dest = SchemeDictionaryDestination(sysconfig.get_paths(), interpreter=sys.executable, script_kind="posix")
for path in sys.argv[1:]:
    with WheelFile.open(path) as source:
        install(source, dest, {"INSTALLER": b"gpustack-iac"})
"""


def install(conn: Connection, label: str, layout: HostLayout, pf: Preflight, wheels: Wheelhouse, sub: str = "",
            what: str = "the agent") -> None:
    """A fresh venv without pip, and the wheelhouse unpacked into it by `installer` (run from its own
    wheel): no ensurepip on the host, no resolver, no index; a fraction of pip's CPU.
    `sub`: a subdirectory of the install directory holding its own `wheels/` and `venv/` (the gateway's)."""
    names = [p.name for p in wheels.files()]
    tool = next(n for n in names if n.startswith("installer-"))
    at = (lambda *parts: layout.path(sub, *parts)) if sub else layout.path
    targets = " ".join(at("wheels", n) for n in names if n != tool)
    with progress.activity(f"host {label}: installing {what} ({len(names) - 1} wheels)"):
        run(conn, label,
            f"{shlex.quote(pf.python)} -m venv --clear --without-pip {at('venv')} && "
            f"PYTHONPATH={at('wheels', tool)} {at('venv', 'bin', 'python')} -c {shlex.quote(_INSTALL)} {targets}",
            f"installing {what} (from the uploaded wheelhouse)", timeout=600)


def write_secret(conn: Connection, pf: Preflight, name: str, value: str) -> None:
    """A file only the login user can read, created empty and restricted before the secret is written."""
    sftp = conn.sftp()
    path = f"{pf.install_dir}/{name}"
    with sftp.open(path, "w") as f:
        f.chmod(0o600)
        f.write(value.encode())


def read_file(conn: Connection, path: str) -> str | None:
    try:
        with conn.sftp().open(path, "r") as f:
            return bytes(f.read()).decode()
    except OSError:
        return None


def pick_port(conn: Connection, label: str, layout: HostLayout, listen: str = "127.0.0.1") -> int:
    out = run(conn, label, f"{layout.path('venv', 'bin', 'python')} -c "
                            f"'import socket; s = socket.socket(); s.bind((\"{listen}\", 0)); print(s.getsockname()[1])'",
              "choosing the agent's port")
    return int(out.strip())


# The host's IPv4 addresses, from the installed venv (psutil is one of the agent's dependencies).
_ADDRESSES = "import json, psutil, socket; print(json.dumps([a.address for addrs in psutil.net_if_addrs().values() " \
             "for a in addrs if a.family == socket.AF_INET]))"


def private_address(conn: Connection, label: str, layout: HostLayout, network: str, internal_ip: str | None) -> str:
    """The host's address inside the fleet's `network`: `internal_ip` when given, else the one
    address of the host's interfaces in that network."""
    net = ipaddress.ip_network(network, strict=False)
    out = run(conn, label, f"{layout.path('venv', 'bin', 'python')} -c {shlex.quote(_ADDRESSES)}", "listing the host's addresses")
    mine = [a for a in json.loads(out) if ipaddress.ip_address(a) in net]
    if internal_ip:
        if ipaddress.ip_address(internal_ip) not in net:
            raise SshHostError(f"host {label}: internal_ip {internal_ip} is not in the fleet's network {network}")
        if internal_ip not in mine:
            raise SshHostError(f"host {label}: internal_ip {internal_ip} is not an address of this host (it has {', '.join(mine) or 'none'} in {network})")
        return internal_ip
    if len(mine) != 1:
        found = f"{len(mine)} ({', '.join(mine)})" if mine else "none"
        raise SshHostError(f"host {label}: expected one address in the fleet's network {network}, found {found}; set internal_ip")
    return mine[0]


def agent_argv(layout: HostLayout, pf: Preflight, port: int, listen: str = "127.0.0.1") -> list[str]:
    d = pf.install_dir
    return [f"{d}/venv/bin/python", "-m", "gpustack_iac.runtime.agent", "--host", listen, "--port", str(port),
            "--token-file", f"{d}/agent.token", "--state-dir", f"{d}/agent", "--port-file", f"{d}/run/agent.port.json",
            "--name", layout.name]


def systemd_unit(layout: HostLayout, pf: Preflight, port: int, user: str, listen: str = "127.0.0.1") -> str:
    """The agent's unit: restarted at once when it dies, from an empty environment but for HOME/PATH."""
    argv = " ".join(shlex.quote(a) for a in agent_argv(layout, pf, port, listen))
    return (
        "[Unit]\n"
        f"Description=gpustack-iac agent {layout.name}\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={user}\n"
        f"WorkingDirectory={pf.install_dir}\n"
        f"Environment=HOME={pf.home}\n"
        # The login session's engine address (not a secret): the agent's container client needs it.
        + (f"Environment=DOCKER_HOST={pf.docker_host}\n" if pf.docker_host else "")
        + f"ExecStart={argv}\n"
        "Restart=always\nRestartSec=200ms\n"
        "KillMode=process\n"  # replicas outlive an agent restart; the agent re-adopts them
        f"StandardOutput=append:{pf.install_dir}/logs/agent.log\nStandardError=inherit\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def start(conn: Connection, label: str, layout: HostLayout, pf: Preflight, port: int, user: str,
          listen: str = "127.0.0.1") -> str:
    """Start the agent under supervision; returns how (`systemd` or `watchdog`)."""
    run(conn, label, f"rm -f {layout.path('run', 'agent.port.json')}", "preparing the agent's start")
    if pf.systemd and (pf.root or pf.sudo):
        sudo = "" if pf.root else "sudo -n "
        unit = systemd_unit(layout, pf, port, user, listen)
        run(conn, label, f"printf %s {shlex.quote(unit)} | {sudo}tee {UNIT_DIR}/{layout.unit} >/dev/null && "
                         f"{sudo}systemctl daemon-reload && {sudo}systemctl enable --now {layout.unit}", "starting the agent (systemd)")
        how = "systemd"
    else:
        d = pf.install_dir
        watchdog = [f"{d}/venv/bin/python", "-m", "gpustack_iac.runtime.watchdog", "--pid-file", f"{d}/run/watchdog.json",
                    "--child-pid-file", f"{d}/run/agent.json", "--", *agent_argv(layout, pf, port, listen)]
        # The watchdog does not detach itself: its own session (setsid where present), no terminal,
        # output appended to the agent's log, so the SSH session can end.
        # Every descriptor of the background job is redirected, or the SSH channel stays open.
        run(conn, label, f"(cd {shlex.quote(d)} && exec $(command -v setsid) {' '.join(shlex.quote(a) for a in watchdog)}) "
                         f"</dev/null >>{shlex.quote(d + '/logs/agent.log')} 2>&1 &",
            "starting the agent (watchdog)", timeout=30)
        how = "watchdog"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = read_file(conn, f"{pf.install_dir}/run/agent.port.json")
        if text:
            with_port = json.loads(text)
            if int(with_port.get("port", 0)) == port:
                return how
        time.sleep(0.2)
    log = read_file(conn, f"{pf.install_dir}/logs/agent.log") or ""
    raise SshHostError(f"host {label}: the agent did not start within {START_TIMEOUT:g} s"
                       + (f": {log.strip().splitlines()[-1]}" if log.strip() else ""))


def facts(conn: Connection, label: str, layout: HostLayout, pf_dir: str) -> dict[str, Any]:
    code = ("import json, pathlib; from gpustack_iac.runtime.agent.hostinfo import StaticFacts, host_report; "
            f"print(json.dumps(host_report(StaticFacts.gather({layout.name!r}), pathlib.Path({pf_dir!r}))))")
    report = json.loads(run(conn, label, f"{layout.path('venv', 'bin', 'python')} -c {shlex.quote(code)}", "reading host facts"))
    return {"cpus": report["cpus"], "memory_mib": report["memory_bytes"] // 2**20, "disk_free_mib": report["disk_free_bytes"] // 2**20,
            "gpus": [{"name": g.get("name"), "memory_mib": g.get("memory_mib")} for g in report.get("gpus", [])]}


# The watchdog's pid from its JSON pid file (runtime/watchdog.py), read with the venv's Python.
_WATCHDOG_PID = ("{d}/venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))[\"pid\"])' "
                 "{d}/run/watchdog.json 2>/dev/null")


def agent_alive(conn: Connection, label: str, pf_dir: str, how: str, unit: str) -> bool:
    if how == "systemd":
        cmd = f"systemctl is-active --quiet {shlex.quote(unit)}"
    else:
        cmd = f"kill -0 \"$({_WATCHDOG_PID.format(d=shlex.quote(pf_dir))})\" 2>/dev/null"
    result = conn.run(cmd, hide=True, warn=True, in_stream=False)
    return result.exited == 0


def _stop_agent_script(conn: Connection, layout: HostLayout, install_dir: str, how: str) -> str:
    d = shlex.quote(install_dir)
    sudo = "" if conn.run("id -u", hide=True, warn=True, in_stream=False).stdout.strip() == "0" else "sudo -n "
    stop_systemd = (f"{sudo}systemctl disable --now {layout.unit} >/dev/null 2>&1; {sudo}rm -f {UNIT_DIR}/{layout.unit}; "
                    f"{sudo}systemctl daemon-reload >/dev/null 2>&1; ") if how == "systemd" else ""
    return f"""
{stop_systemd}
W={d}/run/watchdog.json
if [ -f "$W" ]; then P=$({_WATCHDOG_PID.format(d=d)}); kill -TERM "$P" 2>/dev/null
  for i in $(seq 1 150); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$P" 2>/dev/null; fi
"""


def stop_agent(conn: Connection, label: str, layout: HostLayout, install_dir: str, how: str) -> None:
    """Stop the supervisor and the agent; the agent's replicas keep running (a new agent re-adopts them)."""
    run(conn, label, _stop_agent_script(conn, layout, install_dir, how) + "true\n", "stopping the agent", timeout=60)


def uninstall(conn: Connection, label: str, layout: HostLayout, install_dir: str, how: str, remove_dir: bool) -> None:
    """Stop the agent and every replica it recorded, then remove what was installed."""
    d = shlex.quote(install_dir)
    stop_replicas = ("import pathlib, sys; from gpustack_iac.runtime.agent.offline import stop_all_replicas; "
                     "stop_all_replicas(pathlib.Path(sys.argv[1]), grace=5.0)")
    script = _stop_agent_script(conn, layout, install_dir, how) + f"""
if [ -x {d}/venv/bin/python ] && [ -d {d}/agent ]; then {d}/venv/bin/python -c {shlex.quote(stop_replicas)} {d}/agent; fi
rm -rf {d}/venv {d}/wheels {d}/run {d}/logs {d}/agent {d}/agent.token {d}/install.json
{"rmdir " + d + " 2>/dev/null" if remove_dir else ""}
true
"""
    run(conn, label, script, "removing the agent", timeout=120)


def record_install(conn: Connection, pf: Preflight, record: dict[str, Any]) -> None:
    with conn.sftp().open(f"{pf.install_dir}/install.json", "w") as f:
        f.write(json.dumps(record).encode())


def installed(conn: Connection, pf: Preflight) -> dict[str, Any]:
    text = read_file(conn, f"{pf.install_dir}/install.json")
    try:
        return dict(json.loads(text)) if text else {}
    except ValueError:
        return {}
