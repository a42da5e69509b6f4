"""Boot rehearsal, AWS: the rendered gateway and node boot scripts run in network-namespace
instances against moto's server (S3, SSM, Auto Scaling) and the IMDSv2 stub. The runtime comes
from the stand-in bucket and is checked by SHA-256; the units start under unitrun.py; the node's
agent joins the controller and a replica is served through the gateway. A tampered wheel is refused."""

from __future__ import annotations

import json
import shlex
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from tests.cloud.rehearsal import aws
from tests.cloud.rehearsal.conftest import bundle
from tests.cloud.rehearsal.netns import Instance, Network

pytestmark = pytest.mark.slow
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 180, explain: Callable[[], str] = str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout} s\n{explain()}")


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


def logs(inst: Instance) -> str:
    out = []
    for f in sorted(inst.path("/var/log").glob("*.log")):
        out.append(f"--- {inst.name}:{f.name}\n" + f.read_text()[-3000:])
    return "\n".join(out)


@pytest.fixture(scope="module")
def world(moto: str, metadata: Any) -> aws.AwsWorld:
    return aws.create_world(moto, metadata)


@pytest.fixture(scope="module")
def bundles(world: aws.AwsWorld, wheel_cache: Path) -> dict[str, Any]:
    # One build (the gateway's set, a superset of the node's) for both roles: building a
    # wheelhouse is most of this file's time on a loaded machine.
    gateway = bundle(wheel_cache, gateway=True, cloud="aws")
    aws.upload(world.moto, *gateway)
    return {"node": gateway, "gateway": gateway}


@pytest.fixture(scope="module")
def gateway(network: Network, world: aws.AwsWorld, bundles: dict[str, Any]) -> Iterator[Instance]:
    inst = network.add("awsgw")
    done = inst.boot(aws.gateway_script(world, bundles["gateway"][0]))
    assert done.returncode == 0, f"gateway boot failed:\n{done.stdout}\n{done.stderr}"
    health = f"http://{inst.address}:{aws.CONTROL_PORT}/control/health"
    wait_for(lambda: call("GET", health, world.admin_token)[0] == 200, "the gateway's control API answered",
             explain=lambda: logs(inst))
    yield inst
    inst.kill_all()


def test_gateway_boot_installs_the_pinned_runtime_and_runs_units(gateway: Instance, world: aws.AwsWorld) -> None:
    units = gateway.path("/etc/systemd/system")
    assert sorted(p.name for p in units.iterdir()) == ["gpustack-gateway.service", "gpustack-joins.service"]
    assert "Restart=always" in (units / "gpustack-gateway.service").read_text()
    assert not (gateway.path("/opt/gpustack/venv") / "bin" / "pip").exists(), "no pip in the runtime's venv"
    token = gateway.path("/var/lib/gpustack/admin.token")
    assert token.read_text() == world.admin_token and token.stat().st_mode & 0o777 == 0o600
    assert (gateway.path("/var/lib/gpustack/joins") / "gpu.token").read_text() == world.tokens[f"{aws.PREFIX}/joins/gpu"]
    assert world.metadata.identity.refused == 0, "every metadata request used an IMDSv2 session token"


def test_node_joins_and_serves_a_replica_through_the_gateway(network: Network, gateway: Instance,
                                                             world: aws.AwsWorld, bundles: dict[str, Any],
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    node = network.add("awsnode")
    controller = f"http://{gateway.address}:{aws.CONTROL_PORT}"
    done = node.boot(aws.node_script(world, bundles["node"][0], controller))
    assert done.returncode == 0, f"node boot failed:\n{done.stdout}\n{done.stderr}"
    agents_url = f"{controller}/control/agents"

    def joined() -> list[Any] | None:
        status, body = call("GET", agents_url, world.admin_token)
        agents = json.loads(body) if status == 200 else []
        return agents or None

    agents = wait_for(joined, "the node's agent joined the controller", explain=lambda: logs(node) + logs(gateway))
    assert node.address in json.dumps(agents)
    root = aws.site(tmp_path_factory.mktemp("site"))
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "http.server", "--directory", str(root),
                                                "--bind")) + ' "$GPUSTACK_HOST" "$PORT"'
    service = {"name": "hello", "generation": "g1", "auth": True,
               "probe": {"url": "/hello.txt", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.5},
               "groups": [{"name": "main", "generation": "g1", "replicas": {"min": 1, "max": 1}, "commands": [command],
                           "env": {}, "resources": {"cpu": {"min": 1}, "memory_bytes": {"min": 0},
                                                    "disk_bytes": {"min": 0}, "gpu": None}}]}
    status, body = call("PUT", f"{controller}/control/services/hello", world.admin_token, service)
    assert status in (200, 201), body
    url = f"http://{gateway.address}:{aws.DATA_PORT}/services/hello/hello.txt"
    wait_for(lambda: call("GET", url, world.token) == (200, b"hello from a rehearsed node\n"),
             "the replica answered through the gateway", explain=lambda: logs(node) + logs(gateway))
    assert call("GET", url, "wrong-token")[0] == 401


def test_a_tampered_wheel_is_refused(network: Network, world: aws.AwsWorld, bundles: dict[str, Any]) -> None:
    node_bundle, house = bundles["node"]
    tampered = aws.upload(world.moto, node_bundle, house, tamper="gpustack_iac-")
    inst = network.add("awsbad")
    done = inst.boot(aws.node_script(world, tampered, "http://127.0.0.1:9"))
    assert done.returncode != 0
    assert "gpustack boot:" in done.stderr and "refusing to install" in done.stderr, done.stderr
    assert not inst.path("/opt/gpustack/venv").exists(), "nothing was installed"
    assert not list(inst.path("/etc/systemd/system").iterdir()), "no unit was written"
    assert not inst.pids()
