"""Boot rehearsal, GCP: the rendered gateway and node boot scripts run in network-namespace
instances against gcp-storage-emulator (the runtime's bucket), the metadata stub (service-account
token, identity) and its Secret Manager stand-in. Same checks as AWS's."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Iterator

import pytest

from tests.cloud.rehearsal import gcp
from tests.cloud.rehearsal.conftest import free_port, require, wait_port
from tests.cloud.rehearsal.harness import CONTROL_PORT, assert_refused, boot_gateway, join_and_serve, units_and_runtime
from tests.cloud.rehearsal.netns import Instance, Network

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def storage(network: Network) -> Iterator[str]:
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        require(False, "gcp-storage-emulator (the test extra)")
    host, port = network.host_address, free_port(network.host_address)
    code = "from gcp_storage_emulator.__main__ import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "start", "-H", host, "--port", str(port), "-q", "-M",
                             "--default-bucket", gcp.BUCKET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(host, port, proc, "gcp-storage-emulator")
        yield f"http://{host}:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def world(storage: str, metadata: Any, runtime_wheels: Any) -> gcp.GcpWorld:
    world = gcp.create_world(storage, metadata)
    gcp.upload(storage, *runtime_wheels)
    return world


@pytest.fixture(scope="module")
def gateway(network: Network, world: gcp.GcpWorld, runtime_wheels: Any) -> Iterator[Instance]:
    inst = network.add("gcpgw")
    boot_gateway(inst, gcp.gateway_script(world, runtime_wheels[0]), world.admin_token)
    yield inst
    inst.kill_all()


def test_gateway_boot_installs_the_pinned_runtime_and_runs_units(gateway: Instance, world: gcp.GcpWorld) -> None:
    assert units_and_runtime(gateway) == ["gpustack-gateway.service", "gpustack-joins.service"]
    assert gateway.path("/var/lib/gpustack/token").read_text() == world.token
    assert (gateway.path("/var/lib/gpustack/joins") / "gpu.token").read_text() == world.tokens[gcp.PREFIX + "join-gpu"]


def test_node_joins_and_serves_a_replica_through_the_gateway(network: Network, gateway: Instance, world: gcp.GcpWorld,
                                                             runtime_wheels: Any,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    node = network.add("gcpnode")
    controller = f"http://{gateway.address}:{CONTROL_PORT}"
    join_and_serve(node, gcp.node_script(world, runtime_wheels[0], controller), gateway, world.admin_token,
                   world.token, tmp_path_factory.mktemp("site"))
    assert units_and_runtime(node) == ["gpustack-agent.service"]


def test_a_tampered_wheel_is_refused(network: Network, world: gcp.GcpWorld, runtime_wheels: Any) -> None:
    tampered = gcp.upload(world.storage, *runtime_wheels, tamper="gpustack_iac-")
    inst = network.add("gcpbad")
    assert_refused(inst, inst.boot(gcp.node_script(world, tampered, "http://127.0.0.1:9")))
