"""Session-scoped stand-ins for the boot rehearsal: the namespace network, moto's server,
gcp-storage-emulator, Azurite (HTTPS, OAuth), the metadata stub, the runtime bundle, and each
cloud's world made in them. Where namespaces or a stand-in cannot be had (no root, no `ip`, no
Azurite), the rehearsal skips, except under CI=true, where it fails."""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from gpustack_iac.providers import runtime_bundle, wheelhouse
from gpustack_iac.providers.runtime_bundle import CloudRuntime, RuntimeBundle
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
def stand_in(module: str, package: str, code: str, args: list[str], network: Network, log: Path,
             program: list[str] | None = None, scheme: str = "http") -> Iterator[str]:
    """A stand-in server (`python -c code args...`, or `program args...`, with {host} and {port}
    in the args) on the bridge's address and a free port, stopped by pid afterwards; its URL."""
    if program is None:
        require(importlib.util.find_spec(module) is not None, f"{package} (the test extra)")
    host, port = network.host_address, free_port(network.host_address)
    argv = [*(program or [sys.executable, "-c", code]), *(a.format(host=host, port=port) for a in args)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(host, port, proc, package)
        yield f"{scheme}://{host}:{port}"
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


@pytest.fixture(scope="session")
def runtime(runtime_wheels: tuple[RuntimeBundle, wheelhouse.Wheelhouse]) -> CloudRuntime:
    return CloudRuntime(runtime_wheels[0], runtime_wheels[1].path)


@pytest.fixture(scope="session")
def gcs(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.cloud.rehearsal.gcp import BUCKET

    args = ["start", "-H", "{host}", "--port", "{port}", "-q", "-M", "--default-bucket", BUCKET]
    with stand_in("gcp_storage_emulator", "gcp-storage-emulator", "from gcp_storage_emulator.__main__ import main; main()",
                  args, network, tmp_path_factory.mktemp("gcs") / "gcs.log") as url:
        yield url


def _certificate(address: str, where: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the bridge's address (Azurite takes bearer tokens over HTTPS only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpustack rehearsal blob")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = where / "blob.crt", where / "blob.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="session")
def azurite(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Azurite's Blob service over HTTPS with `--oauth basic`; its account URL and CA file."""
    program = shutil.which("azurite-blob")
    require(program is not None, "azurite-blob (npm install -g azurite; .ci/run installs it)")
    assert program is not None
    where = tmp_path_factory.mktemp("azurite")
    cert, key = _certificate(network.host_address, where)
    args = ["--blobHost", "{host}", "--blobPort", "{port}", "--location", str(where / "data"),
            "--oauth", "basic", "--cert", str(cert), "--key", str(key), "--skipApiVersionCheck", "--silent",
            "--disableTelemetry"]  # it would otherwise reach out to Application Insights
    with stand_in("", "azurite", "", args, network, where / "azurite.log", program=[program], scheme="https") as url:
        yield f"{url}/devstoreaccount1", str(cert)


@pytest.fixture(scope="session")
def aws_world(moto: str, metadata: MetadataStub) -> Any:
    from tests.cloud.rehearsal.aws import AwsWorld

    return AwsWorld(moto, metadata)


@pytest.fixture(scope="session")
def gcp_world(gcs: str, metadata: MetadataStub, network: Network) -> Iterator[Any]:
    from tests.cloud.rehearsal.gcp import MIG, GcpWorld
    from tests.support.group_standin import StandIn, serve

    # Compute Engine's MIG calls, answered only with the token the metadata stub hands the instance.
    compute = StandIn(gcp_token=metadata.identity.gcp_token, mig=MIG)
    with serve(compute, network.host_address) as url:
        yield GcpWorld(gcs, metadata, compute, url)


@pytest.fixture(scope="session")
def azure_world(azurite: tuple[str, str], metadata: MetadataStub, network: Network) -> Iterator[Any]:
    require(importlib.util.find_spec("azure.storage.blob") is not None, "azure-storage-blob (the test extra)")
    from tests.cloud.rehearsal.azure import VMSS, AzureWorld
    from tests.support.group_standin import StandIn, serve

    # ARM's scale-set calls, answered only with a management token the IMDS stub issued.
    def management(token: str) -> bool:
        return metadata.identity.azure_tokens.get(token) == "https://management.azure.com"

    arm = StandIn(vmss=VMSS, azure_token=management)
    with serve(arm, network.host_address) as url:
        yield AzureWorld(azurite[0], azurite[1], metadata, arm, url)
