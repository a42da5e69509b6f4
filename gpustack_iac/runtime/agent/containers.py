"""Container replicas through the Docker CLI (or Podman's): the image pulled once, with the
replica's registry credentials, then `docker run` in the foreground as the supervised process.

dstack's semantics (docs/workloads.md, "Containers"): the container listens on its declared port
and the agent publishes a free host port to it; `commands` run under the image's `/bin/sh -c`;
`working_dir` is a path inside the image; a multi-node task's nodes share the host's network so
they reach each other at the hosts' addresses.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping

from gpustack_iac.runtime.agent import mounts
from gpustack_iac.runtime.agent.spec import ReplicaSpec

PULL_TIMEOUT = 3600.0  # a CUDA image is many gigabytes

log = logging.getLogger("gpustack_iac.agent")

# One pull of an image per engine at a time. A group's replicas on one host start together; Docker's
# daemon joins identical pulls, but Podman's service runs each, every one downloading the image
# again and contending for the image store's lock. The others wait, then find the image present.
_pulls: dict[tuple[str, ...], threading.Lock] = {}
_pulls_guard = threading.Lock()


def _pull_lock(client: list[str], env: Mapping[str, str], image: str) -> threading.Lock:
    key = (*client, env.get("DOCKER_HOST", ""), image)
    with _pulls_guard:
        return _pulls.setdefault(key, threading.Lock())


def container_name(replica_id: str) -> str:
    return f"gpustack-{replica_id}"


def gpu_request(gpus: tuple[int, ...]) -> list[str]:
    """`--gpus "device=0,2"`: Docker's device request for exactly the placement's GPUs (the quotes
    are part of the value: without them the CLI reads the comma as a list separator)."""
    return ["--gpus", '"device=' + ",".join(str(g) for g in gpus) + '"'] if gpus else []


def run_argv(client: list[str], spec: ReplicaSpec, host_port: int, bind_host: str, env_names: list[str]) -> list[str]:
    """`docker run` in the foreground, so the client is the supervised process and its output lands
    in the replica's log. Environment values are passed by name only (`-e NAME` reads the client's
    environment): values never appear in argv, which every user can read."""
    opts = spec.container
    argv = [*client, "run", "--rm", "--init", "--name", container_name(spec.id)]
    if opts.host_network:
        argv += ["--network", "host"]
    else:
        argv += ["-p", f"{bind_host}:{host_port}:{opts.port or host_port}"]
    for name in sorted(env_names):
        argv += ["-e", name]
    argv += mounts.docker_args(spec)
    argv += gpu_request(spec.gpus)
    if spec.working_dir:
        argv += ["-w", spec.working_dir]
    if opts.user:
        argv += ["--user", opts.user]
    if opts.privileged:
        argv.append("--privileged")
    if opts.shm_size:
        argv += ["--shm-size", f"{opts.shm_size}b"]
    # dstack: commands run under /bin/sh -c; with an `entrypoint` ("bash -ic" and the like) the joined
    # commands are its last argument instead. Without commands the image's own entrypoint/cmd run.
    entry = shlex.split(opts.entrypoint) if opts.entrypoint else (["/bin/sh", "-c"] if spec.commands else [])
    if entry:
        argv += ["--entrypoint", entry[0]]
    argv.append(spec.image or "")
    argv += entry[1:]
    if spec.commands:
        argv.append(spec.shell_command)
    return argv


def registry_of(image: str) -> str:
    """The registry an image reference names (`docker.io` when its first part is no host)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "https://index.docker.io/v1/"


def _auth_config(image: str, username: str, password: str, directory: Path) -> Path:
    """A private DOCKER_CONFIG holding only this image's credentials (mode 0600, removed after the
    pull): the password never appears in argv or in the agent's environment."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    path = directory / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {registry_of(image): {"auth": token}}}, f)
    return directory


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def ensure_image(client: list[str], spec: ReplicaSpec, env: Mapping[str, str], log_path: Path) -> str | None:
    """Pull the image unless the engine has it; None when it is there, else one line saying why not.
    The pull's progress goes to the replica's log."""
    image = spec.image or ""
    lock = _pull_lock(client, env, image)
    if not lock.acquire(blocking=False):
        log.info("replica %s: waiting for another replica's pull of %s", spec.id, image)
        lock.acquire()
    try:
        return _ensure_image(client, spec, image, env, log_path)
    finally:
        lock.release()


def _ensure_image(client: list[str], spec: ReplicaSpec, image: str, env: Mapping[str, str], log_path: Path) -> str | None:
    present = subprocess.run([*client, "image", "inspect", image], env=dict(env), capture_output=True, timeout=60, check=False)
    if present.returncode == 0:
        return None
    log.info("replica %s: pulling %s", spec.id, image)
    started = time.monotonic()
    auth = spec.container.registry_auth
    with tempfile.TemporaryDirectory(prefix="gpustack-pull-") as tmp:
        pull_env = dict(env)
        if auth is not None:
            pull_env["DOCKER_CONFIG"] = str(_auth_config(image, auth.username, auth.password, Path(tmp)))
        try:
            result = subprocess.run([*client, "pull", image], env=pull_env, capture_output=True, text=True,
                                    timeout=PULL_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return f"image {image}: pull did not finish in {PULL_TIMEOUT:.0f} s"
    with open(log_path, "a") as replica_log:
        replica_log.write(result.stdout + result.stderr)
    if result.returncode == 0:
        log.info("replica %s: pulled %s in %.1f s", spec.id, image, time.monotonic() - started)
        return None
    why = _last_line(result.stderr or result.stdout)
    hint = " (check registry_auth)" if auth is not None or "unauthorized" in why.lower() or "denied" in why.lower() else ""
    log.warning("replica %s: pull of %s failed after %.1f s: %s", spec.id, image, time.monotonic() - started, why)
    return f"image {image}: pull failed{hint}: {why}"
