"""Session-wide container fixtures: one engine (Docker, else our own Podman service), the test
images built once, and a private registry (Debian's docker-registry with htpasswd) on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.containers import Engine, build_image, container_engine, missing
from tests.support.ports import free_port

REGISTRY_PORT = free_port()
REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with container_engine([REGISTRY]) as eng:
        yield eng


@dataclass(frozen=True)
class WebImages:
    v1: str
    v2: str


@pytest.fixture(scope="session")
def web_images(engine: Engine) -> Iterator[WebImages]:
    """Two tags of a busybox image whose /version differs: a rolling update has something to change.
    Removed afterwards: each run's build would otherwise stay in the machine's image store."""
    images = WebImages(v1=build_image(engine, "localhost/gpustack-test-web:1", {"/version": "v1\n"}),
                       v2=build_image(engine, "localhost/gpustack-test-web:2", {"/version": "v2\n"}))
    yield images
    engine.run("rmi", "--force", images.v1, images.v2, check=False)


@dataclass(frozen=True)
class Registry:
    address: str
    username: str
    password: str


def _htpasswd(username: str, password: str) -> str:
    import bcrypt  # noqa: PLC0415 - only the registry test needs it

    return f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"


@pytest.fixture(scope="session")
def registry(engine: Engine) -> Iterator[Registry]:
    """docker-registry on 127.0.0.1 with basic auth, holding `private/web:1`; stopped by pid."""
    exe = shutil.which("docker-registry")
    if exe is None:
        missing("docker-registry is not installed")
    with tempfile.TemporaryDirectory(prefix="gpustack-registry-") as tmp:
        root = Path(tmp)
        (root / "htpasswd").write_text(_htpasswd("puller", "right-password"))
        (root / "config.yml").write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
            f"http: {{addr: '{REGISTRY}'}}\n"
            f"auth: {{htpasswd: {{realm: test, path: {root / 'htpasswd'}}}}}\n"
        )
        log = open(root / "registry.log", "wb")
        proc = subprocess.Popen([exe, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_registry(proc, root)
            _push_private(engine, root)
            yield Registry(address=REGISTRY, username="puller", password="right-password")
        finally:
            engine.run("rmi", "--force", f"{REGISTRY}/private/web:1", check=False)  # what `up` pulled
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()


def _wait_registry(proc: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 401: up, asking for credentials
        except OSError:
            time.sleep(0.2)
    pytest.fail("docker-registry did not answer within 60 s")


def _push_private(engine: Engine, root: Path) -> None:
    """Push with credentials from a throw-away DOCKER_CONFIG (the test's own, not the user's)."""
    import base64
    import json

    cfg = root / "push-config"
    cfg.mkdir()
    token = base64.b64encode(b"puller:right-password").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {REGISTRY: {"auth": token}}}))
    tag = f"{REGISTRY}/private/web:1"
    build_image(engine, tag, {"/version": "private\n"})
    env = {**os.environ, **engine.env, "DOCKER_CONFIG": str(cfg)}
    result = subprocess.run([*engine.client, "push", tag], env=env, capture_output=True, timeout=300, check=False)
    if result.returncode != 0:
        pytest.fail(f"push to the test registry failed: {result.stderr.decode()[-2000:]}")
    engine.run("rmi", tag)  # `up` must pull it
