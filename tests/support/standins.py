"""Real stand-ins for remote state stores, started by the tests: moto's S3 server, gcp-storage-emulator
(behind strict_gcs.py's proxy, which enforces the generation preconditions the emulator ignores),
Azurite and a throw-away PostgreSQL cluster. Each listens on a free loopback port, keeps its files in a
temporary directory, and is stopped by its pid (even when the test fails).

Where a stand-in is not installed the test skips, except under CI (`CI` set), where it fails: `.ci/run`
installs them all.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.strict_gcs import strict_gcs

START_SECONDS = 120.0  # a busy 2-core machine can take a while to start node or postgres
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's published dev key


@dataclass
class StandIn:
    """A running stand-in: the state URL scheme it serves and the environment clients need."""

    scheme: str
    env: dict[str, str] = field(default_factory=dict)

    def url(self, name: str) -> str:
        """A fresh, empty state location named `name` (a bucket, container or database table)."""
        raise NotImplementedError


def missing(what: str) -> None:
    message = f"{what} is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, what: str) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} in {START_SECONDS:.0f} s: {log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def _process(args: list[str], port: int, workdir: Path, what: str, env: dict[str, str] | None = None) -> Iterator[None]:
    log = workdir / f"{what}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        _wait_port(port, proc, log, what)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


class S3(StandIn):
    def url(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket=name)
        return f"s3://{name}/team/state"


@contextlib.contextmanager
def moto_s3(workdir: Path) -> Iterator[S3]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        missing("moto[server]")
    port = free_port()
    with _process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port, workdir, "moto"):
        yield S3("s3", {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"})


class Gcs(StandIn):
    """Clients reach gcp-storage-emulator through the strict proxy (strict_gcs.py), which enforces the
    generation preconditions the emulator ignores; `direct` is the emulator's own address."""

    direct: str = ""

    def url(self, name: str) -> str:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        with _env(self.env):
            storage.Client(project="local", credentials=AnonymousCredentials()).create_bucket(name)
        return f"gs://{name}/team/state"


@contextlib.contextmanager
def gcs_emulator(workdir: Path) -> Iterator[Gcs]:
    exe = shutil.which("gcp-storage-emulator") or str(Path(sys.executable).with_name("gcp-storage-emulator"))
    if not Path(exe).exists():
        missing("gcp-storage-emulator")
    port = free_port()
    with _process([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"], port, workdir, "gcs"), \
            strict_gcs(port) as proxy:
        stand_in = Gcs("gs", {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{proxy.port}"})
        stand_in.direct = f"http://127.0.0.1:{port}"
        yield stand_in


class Azure(StandIn):
    def url(self, name: str) -> str:
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(self.env["AZURE_STORAGE_CONNECTION_STRING"]).create_container(name)
        return f"azblob://{name}/team/state"


@contextlib.contextmanager
def azurite(workdir: Path) -> Iterator[Azure]:
    exe = shutil.which("azurite-blob")
    if exe is None:
        missing("azurite (npm)")
    port = free_port()
    data = workdir / "azurite"
    data.mkdir()
    args = [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data), "--skipApiVersionCheck"]
    with _process(args, port, workdir, "azurite"):
        conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
        yield Azure("azblob", {"AZURE_STORAGE_CONNECTION_STRING": conn})


class Postgres(StandIn):
    base: str = ""

    def url(self, name: str) -> str:
        return f"{self.base}?table={name.replace('-', '_')}"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[Postgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL (initdb, pg_ctl)")
    # PostgreSQL refuses to run as root: as root, the cluster belongs to an unprivileged user, in a
    # directory of its own outside pytest's root-only temporary tree.
    as_user: list[str] = []
    data_root = Path(tempfile.mkdtemp(prefix="gpustack-pg-"))
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(data_root, user)
        as_user = ["runuser", "-u", user, "--"]
    port = free_port()
    data = data_root / "data"
    try:
        subprocess.run([*as_user, str(initdb), "-D", str(data), "-A", "trust", "-U", "gpustack", "--no-sync"],
                       check=True, capture_output=True, timeout=START_SECONDS)
        opts = f"-p {port} -k {data_root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*as_user, str(pg_ctl), "-D", str(data), "-o", opts, "-l", str(data_root / "log"), "-w",
                        "-t", str(int(START_SECONDS)), "start"], check=True, capture_output=True, timeout=START_SECONDS + 10)
        try:
            stand_in = Postgres("postgres")
            stand_in.base = f"postgres://gpustack@127.0.0.1:{port}/postgres"
            yield stand_in
        finally:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the cluster is thrown away
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


STARTERS = {"s3": moto_s3, "gs": gcs_emulator, "azblob": azurite, "postgres": postgres}


@pytest.fixture(scope="session", params=sorted(STARTERS))
def standin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """Each stand-in in turn, started once per test session (worker) and stopped at its end."""
    with STARTERS[request.param](tmp_path_factory.mktemp(f"standin-{request.param}")) as running:
        yield running
