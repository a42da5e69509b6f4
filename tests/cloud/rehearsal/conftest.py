"""Session-scoped stand-ins for the boot rehearsal: the namespace network, moto's server, the
metadata stub and the runtime bundles. Where namespaces cannot be made (no root, no `ip`), the
rehearsal skips, except under CI=true, where it fails."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from gpustack_iac.providers import runtime_bundle, wheelhouse
from gpustack_iac.providers.runtime_bundle import RuntimeBundle
from tests.cloud.rehearsal.metadata import MetadataStub
from tests.cloud.rehearsal.netns import Network, can_netns, create_network


def require(ok: bool, what: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"the boot rehearsal needs {what} (CI installs it: .ci/run)")
        pytest.skip(f"the boot rehearsal needs {what}")


@pytest.fixture(scope="session")
def network() -> Iterator[Network]:
    require(can_netns(), "root, ip, nsenter and unshare")
    net = create_network()
    try:
        yield net
    finally:
        net.teardown()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{what} did not listen on {host}:{port} within {timeout} s")


@contextlib.contextmanager
def stand_in(module: str, package: str, code: str, args: list[str], network: Network, log: Path) -> Iterator[str]:
    """A stand-in server (`python -c code args... HOST PORT` as the options name them) on the
    bridge's address and a free port, stopped by pid afterwards; its URL."""
    require(importlib.util.find_spec(module) is not None, f"{package} (the test extra)")
    host, port = network.host_address, free_port(network.host_address)
    argv = [sys.executable, "-c", code, *(a.format(host=host, port=port) for a in args)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(host, port, proc, package)
        yield f"http://{host}:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def moto(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with stand_in("moto.server", "moto[server]", "from moto.server import main; main()", ["-H", "{host}", "-p", "{port}"],
                  network, tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture(scope="session")
def metadata(network: Network) -> Iterator[MetadataStub]:
    with MetadataStub(network.host_address) as stub:
        yield stub


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheelhouse")


@pytest.fixture(scope="session")
def runtime_wheels(wheel_cache: Path) -> tuple[RuntimeBundle, wheelhouse.Wheelhouse]:
    """One bundle for every rehearsal and both roles: the gateway's set with the AWS SDK, a
    superset of the node's (building a wheelhouse is most of the rehearsal's time on a loaded
    machine). This machine's Python stands in for the image's 3.12: the instance runs here."""
    python, machine = wheelhouse.local_platform()
    return runtime_bundle.build(wheel_cache, machine, gateway=True, cloud="aws", python=python)
