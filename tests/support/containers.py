"""A Docker-compatible engine for tests: the Docker daemon when one answers, else a `podman system
service` of our own on a socket in a temporary directory (stopped by pid), and test images built
here from busybox-static (no registry is reachable from the test machines).

Without an engine the container tests skip on a laptop and FAIL under CI (`CI` set): .ci/run
installs Podman, so a missing engine there is a broken set-up, never a reason to skip.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from gpustack_iac.runtime import envpolicy
from gpustack_iac.runtime.agent import engine as engine_client
from tests.support.wait import stop_group

BUSYBOX = Path("/bin/busybox")
# Applets the test images use: a shell, an HTTP server, netcat for rendezvous, and the basics.
APPLETS = ("sh", "httpd", "nc", "cat", "echo", "env", "id", "ls", "mkdir", "sleep", "hostname", "grep", "find", "wc",
           "head", "test", "true", "false", "printf", "ps", "kill", "tr", "sed", "cut", "seq", "date", "stat", "timeout")


@dataclass(frozen=True)
class Engine:
    env: dict[str, str]  # DOCKER_HOST and friends, to add to the environment of what the test starts
    client: tuple[str, ...]

    def run(self, *args: str, check: bool = True, timeout: float = 120, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([*self.client, *args], env={**os.environ, **self.env}, input=stdin, capture_output=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(self.client)} {' '.join(args)} exited {result.returncode}: {result.stderr.decode()[-2000:]}")
        return result

    def containers(self, name_prefix: str = "gpustack-") -> list[str]:
        """Every container (running or not) whose name starts with the prefix: `ps -a`."""
        out = self.run("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
        return [n for n in out if n.startswith(name_prefix)]


def missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"no container engine under CI: {why} (.ci/run installs Podman)")
    pytest.skip(f"no container engine: {why}")


def _answers(client: list[str], env: dict[str, str]) -> bool:
    try:
        return subprocess.run([*client, "info"], env={**os.environ, **env}, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def podman_service(tmp: Path) -> Iterator[dict[str, str]]:
    """`podman system service` on a socket in `tmp`, stopped by pid afterwards."""
    sock = tmp / "podman.sock"
    log = open(tmp / "podman-service.log", "wb")
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **({"CONTAINERS_REGISTRIES_CONF": str(tmp / "registries.conf")})})
    env = {"DOCKER_HOST": f"unix://{sock}"}
    try:
        deadline = time.monotonic() + 120
        client = engine_client.client_argv({**os.environ, **env})
        while not (sock.exists() and _answers(client, env)):
            if proc.poll() is not None or time.monotonic() > deadline:
                missing(f"podman system service did not answer: {(tmp / 'podman-service.log').read_text()[-1000:]}")
            time.sleep(0.2)
        yield env
    finally:
        stop_group(proc)
        log.close()


def insecure_registries_conf(tmp: Path, registries: list[str]) -> None:
    """Podman reads this (CONTAINERS_REGISTRIES_CONF) for pulls: the test registry speaks plain HTTP."""
    entries = "".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in registries)
    (tmp / "registries.conf").write_text('unqualified-search-registries = []\n' + entries)


@contextlib.contextmanager
def container_engine(registries: list[str]) -> Iterator[Engine]:
    """The Docker daemon if one answers, else our own Podman service."""
    plain = engine_client.client_argv(os.environ)
    # A Docker daemon that answers is used as it is; otherwise our own Podman service, so the tests
    # go through DOCKER_HOST and the Docker API as a user's set-up would (not Podman's local mode).
    if Path(plain[0]).name == "docker" and shutil.which(plain[0]) and _answers(plain, {}):
        yield Engine(env=envpolicy.container_client_env(os.environ), client=tuple(plain))
        return
    if shutil.which("podman") is None:
        missing("neither a Docker daemon at DOCKER_HOST nor podman")
    with tempfile.TemporaryDirectory(prefix="gpustack-podman-") as tmp:
        insecure_registries_conf(Path(tmp), registries)
        with podman_service(Path(tmp)) as env:
            yield Engine(env=env, client=tuple(engine_client.client_argv({**os.environ, **env})))


def busybox_rootfs_tar(extra: dict[str, str]) -> bytes:
    """A root filesystem of busybox-static with its applets linked, /etc/passwd for `--user`, and
    `extra` files (path → content)."""
    if not BUSYBOX.exists():
        missing("busybox-static is not installed (/bin/busybox)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.type, info.linkname, info.size = mode, kind, link, len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        for d in ("bin", "etc", "tmp", "www", "root", "proc", "sys", "dev"):
            add(d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        add("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in APPLETS:
            add(f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        add("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        for path, content in extra.items():
            add(path.lstrip("/"), content.encode(), 0o755)
    return buf.getvalue()


def build_image(engine: Engine, tag: str, extra: dict[str, str] | None = None) -> str:
    """`import` of a busybox root filesystem as `tag` (no registry needed)."""
    engine.run("import", "-", tag, stdin=busybox_rootfs_tar(extra or {}), timeout=300)
    return tag
