"""What every cloud's rehearsal shares: the world a cloud's stand-ins make (`World`), the node group
and gateway the backends render boot scripts for, waiting, the control API, the replica served
through the gateway, a refused boot."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar


from gpustack_iac.backends.cloud import GatewayInstance, NodeGroup
from gpustack_iac.providers.runtime_bundle import CloudRuntime
from tests.cloud.rehearsal.metadata import MetadataStub
from tests.cloud.rehearsal.netns import Instance
from tests.support.wait import wait_until

T = TypeVar("T")
AGENT_PORT = 8600
CONTROL_PORT = 8443
DATA_PORT = 80  # what the backends' gateways listen on without a domain
PROJECT, STACK = "rehearsal", "dev"


def node_group(fleet: str, region: str, runtime: CloudRuntime | None = None) -> NodeGroup:
    """A CPU node group as placement would make it (the instance runs this machine's CPU)."""
    return NodeGroup(name=fleet, fleet=fleet, region=region, instance_types=("small",), spot=False, min_size=0,
                     max_size=3, disk_gb=50, gpu_vendor=None, gpu_count=0, runtime=runtime)


def gateway_instance(region: str, runtime: CloudRuntime) -> GatewayInstance:
    return GatewayInstance(name="gw", region=region, instance_type="small", domain=None, certificate=None, runtime=runtime)


def tampered(runtime: CloudRuntime, tamper: str | None) -> CloudRuntime:
    """With `tamper`, the same bundle under another version's prefix (its manifest, and so the
    digest the boot script pins, untouched)."""
    if tamper is None:
        return runtime
    return dataclasses.replace(runtime, bundle=dataclasses.replace(runtime.bundle, version=runtime.bundle.version + "-tampered"))


class World:
    """One cloud's stand-ins with what its stack would have made there: the tokens in its secret
    store (`tokens`: token, admin, join, agent), the runtime uploaded as `up` would, and the boot
    scripts its backend renders, pointed at the stand-ins."""

    cloud = ""
    sizes_groups = False  # the controller on the rehearsed gateway sizes this cloud's node group
    boot_env: dict[str, str] = {}
    tokens: dict[str, str]
    metadata: MetadataStub

    def upload(self, runtime: CloudRuntime, tamper: str | None = None) -> CloudRuntime:
        raise NotImplementedError

    def gateway_script(self, runtime: CloudRuntime) -> str:
        raise NotImplementedError

    def node_script(self, runtime: CloudRuntime, controller: str) -> str:
        raise NotImplementedError

    def group_size(self) -> int:
        """The node group's size in the cloud's stand-in (desired capacity, target size, capacity)."""
        raise NotImplementedError

    def set_group_size(self, n: int) -> None:
        raise NotImplementedError

    @staticmethod
    def objects(runtime: CloudRuntime, tamper: str | None) -> Iterator[tuple[str, bytes]]:
        """Each object's key and bytes; with `tamper`, the wheel whose name starts so has its last bytes changed."""
        for obj in runtime.objects():
            data = obj.data if obj.path is None else obj.path.read_bytes()
            if tamper and obj.path is not None and obj.path.name.startswith(tamper):
                data = data[:-64] + bytes(64)
            yield obj.key, data


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 180, explain: Callable[[], str] = str) -> T:
    return wait_until(check, timeout, 0.5, what, explain=explain)  # type: ignore[arg-type]


def call(method: str, url: str, token: str, body: Any = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {token}",
                                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e).encode()


def logs(*instances: Instance) -> str:
    out = []
    for inst in instances:
        for f in sorted(inst.path("/var/log").glob("*.log")):
            out.append(f"--- {inst.name}:{f.name}\n" + f.read_text()[-3000:])
    return "\n".join(out)


def boot_gateway(inst: Instance, script: str, admin_token: str, env: dict[str, str] | None = None) -> None:
    done = inst.boot(script, env=env)
    assert done.returncode == 0, f"gateway boot failed:\n{done.stdout}\n{done.stderr}"
    health = f"http://{inst.address}:{CONTROL_PORT}/control/health"
    wait_for(lambda: call("GET", health, admin_token)[0] == 200, "the gateway's control API answered",
             explain=lambda: logs(inst))


def units_and_runtime(inst: Instance) -> list[str]:
    """The units a boot script left, after checking the runtime's venv has no pip."""
    assert (inst.path("/opt/gpustack/runtime") / "bin" / "python").exists()
    assert not (inst.path("/opt/gpustack/runtime") / "bin" / "pip").exists(), "no pip in the runtime's venv"
    units = inst.path("/etc/systemd/system")
    for unit in units.iterdir():
        assert "Restart=always" in unit.read_text()
    return sorted(p.name for p in units.iterdir())


def join_and_serve(node: Instance, script: str, gateway: Instance, admin_token: str, token: str, site: Path,
                   env: dict[str, str] | None = None) -> None:
    """Boot the node, wait for its agent to join, and serve a static file through the gateway."""
    controller = f"http://{gateway.address}:{CONTROL_PORT}"
    done = node.boot(script, env=env)
    assert done.returncode == 0, f"node boot failed:\n{done.stdout}\n{done.stderr}"

    def joined() -> list[Any] | None:
        status, body = call("GET", f"{controller}/control/agents", admin_token)
        agents = json.loads(body) if status == 200 else []
        return [a for a in agents if node.address in json.dumps(a)] or None

    wait_for(joined, "the node's agent joined the controller", explain=lambda: logs(node, gateway))
    site.mkdir(parents=True, exist_ok=True)
    (site / "hello.txt").write_text("hello from a rehearsed node\n")
    site.chmod(0o755)
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "http.server", "--directory", str(site),
                                                "--bind")) + ' "$GPUSTACK_HOST" "$PORT"'
    name = f"hello-{node.name}"
    service = {"name": name, "generation": "g1", "auth": True,
               "probe": {"url": "/hello.txt", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.5},
               "groups": [{"name": "main", "generation": "g1", "replicas": {"min": 1, "max": 1}, "commands": [command],
                           "env": {}, "resources": {"cpu": {"min": 1}, "memory_bytes": {"min": 0},
                                                    "disk_bytes": {"min": 0}, "gpu": None}}]}
    status, body = call("PUT", f"{controller}/control/services/{name}", admin_token, service)
    assert status in (200, 201), body
    url = f"http://{gateway.address}:{DATA_PORT}/services/{name}/hello.txt"
    wait_for(lambda: call("GET", url, token) == (200, b"hello from a rehearsed node\n"),
             "the replica answered through the gateway", explain=lambda: logs(node, gateway))
    assert call("GET", url, "wrong-token")[0] == 401


def assert_refused(inst: Instance, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0
    assert "gpustack boot:" in done.stderr and "refusing to install" in done.stderr, done.stderr
    assert not inst.path("/opt/gpustack/runtime").exists(), "nothing was installed"
    assert not list(inst.path("/etc/systemd/system").iterdir()), "no unit was written"
    assert not inst.pids()
