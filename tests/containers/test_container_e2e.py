"""`image:` services and tasks end to end on the local backend, through the real CLI, with a real
engine (Podman's Docker API where no Docker daemon answers) and images built in the test.

One project per scenario keeps each `up` small; the engine and the images are shared session-wide.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from tests.containers.conftest import Registry, WebImages
from tests.e2e.conftest import EXAMPLES, Project, http, kill_all, processes_under, wait_until
from tests.support.containers import Engine

pytestmark = pytest.mark.slow
SCHEDULING_UNIT = "podman"  # one worker at a time uses Podman (tests/conftest.py)

# The container listens on its declared port (8000) in both replicas on one host: the agent
# publishes a different free host port to each.
WEB = """\
type: service
name: {name}
port: 8000
image: {image}
replicas: 2
commands:
  - echo "replica $DSTACK_REPLICA_NUM of $DSTACK_RUN_NAME $(cat /version)" > /www/index.html
  - echo ok > /www/health
  - exec httpd -f -p 8000 -h /www
probes:
  - url: /health
    interval: 1
resources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}
{extra}"""


@pytest.fixture
def one_host(tmp_path: Path, engine: Engine) -> Iterator[Project]:
    """The local example's gateway and a fleet of ONE host, with the engine's settings in the environment."""
    root = tmp_path / "proj"
    config = root / "web"
    config.mkdir(parents=True)
    shutil.copy(EXAMPLES / "local" / "gateway.gpustack.yml", config)
    (config / "fleet.gpustack.yml").write_text(
        "type: fleet\nname: box\nbackends: [local]\nnodes: 1\nresources: {cpu: 1.., memory: 64MB.., disk: 0GB..}\n")
    project = Project(root=root, config=config, extra_env=dict(engine.env))
    try:
        yield project
    finally:
        try:
            project.cli("destroy", "--yes", check=False, timeout=300)
        finally:
            kill_all(processes_under(root))


# Unique names: with pytest-xdist another worker's engine shares the container storage, and a
# test counts only its own containers.
NAME = f"web{uuid.uuid4().hex[:6]}"
TASK_NAME = f"train{uuid.uuid4().hex[:6]}"


def _write(project: Project, image: str, extra: str = "") -> None:
    (project.config / "web.gpustack.yml").write_text(WEB.format(name=NAME, image=image, extra=extra))


def _mine(engine: Engine, name: str = NAME) -> list[str]:
    return engine.containers(f"gpustack-{name}-")


def _seen(endpoint: str, token: str, n: int = 20) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        status, body = http("GET", endpoint + "/", token)
        assert status == 200, (status, body)
        out[body.decode().strip()] += 1
    return out


def test_two_replicas_on_one_host_listen_on_the_declared_port_then_roll_and_leave_nothing(
        one_host: Project, engine: Engine, web_images: WebImages) -> None:
    _write(one_host, web_images.v1)
    one_host.cli("up", "web", "--yes")
    outputs = one_host.outputs()
    endpoint, token = outputs["endpoint"], outputs["token"]
    seen = _seen(endpoint, token)
    assert set(seen) == {f"replica 0 of {NAME} v1", f"replica 1 of {NAME} v1"}, seen
    assert len(_mine(engine)) == 2
    _no_credentials_inside(one_host, engine, [token, outputs["admin_token"]])

    # A new tag under bounded load (one client, back to back): not one request fails.
    failures: list[tuple[int, bytes]] = []
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, body = http("GET", endpoint + "/", token)
            if status != 200:
                failures.append((status, body))
            else:
                versions[body.decode().split()[-1]] += 1

    client = threading.Thread(target=load)
    client.start()
    try:
        _write(one_host, web_images.v2)
        one_host.cli("up", "web", "--yes")
        wait_until(lambda: versions["v2"] > 5, 60, what="v2 answering")
    finally:
        stop.set()
        client.join(timeout=60)
    assert not failures, failures[:5]
    assert set(_seen(endpoint, token)) <= {f"replica {i} of {NAME} v2" for i in range(4)}

    one_host.cli("destroy", "--yes")
    assert _mine(engine) == []


def _no_credentials_inside(project: Project, engine: Engine, secrets: list[str]) -> None:
    """Each replica searches its whole filesystem and environment for every token and key of the
    runtime (the gateway's, the admin's, each agent's) and finds none. The search itself is shown
    to work: the same grep finds a value planted in the container."""
    secrets = secrets + [f.read_text().strip() for f in (project.root / ".gpustack").rglob("*.token")]
    assert len(secrets) >= 3
    for name in _mine(engine):
        for value in secrets:
            # Every top-level directory but the kernel's (/proc, /sys) and devices (/dev/zero never ends).
            found = engine.run("exec", name, "sh", "-c", 'for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rlF "$1" "$d";; '
                               'esac; done; exit 0', "search", value, check=False)
            assert found.returncode == 0 and found.stdout == b"", (name, found.stdout, found.stderr)
        env = engine.run("exec", name, "env").stdout.decode()
        assert not [line for line in env.splitlines() if line.split("=")[0] in ("DOCKER_HOST", "GPUSTACK_PYTHON", "GPUSTACK_AGENT_STATE_DIR")]
        assert not any(value in env for value in secrets)
    planted = _mine(engine)[0]
    engine.run("exec", planted, "sh", "-c", f"echo {secrets[-1]} > /tmp/planted")
    assert engine.run("exec", planted, "grep", "-rlF", secrets[-1], "/tmp", check=False).stdout.decode().strip() == "/tmp/planted"
    engine.run("exec", planted, "sh", "-c", ": > /tmp/planted")


def test_a_private_image_is_pulled_with_registry_auth_and_a_wrong_password_fails_up_naming_it(
        one_host: Project, engine: Engine, registry: Registry) -> None:
    image = f"{registry.address}/private/web:1"
    auth = f"registry_auth: {{username: {registry.username}, password: wrong-password}}\n"
    _write(one_host, image, auth)
    started = time.monotonic()
    failed = one_host.cli("up", "web", "--yes", check=False)
    took = time.monotonic() - started
    assert failed.returncode != 0
    message = failed.stderr.strip().splitlines()[-1]
    assert image in message and "pull failed" in message, failed.stderr
    assert "Traceback" not in failed.stderr
    print(f"wrong password: up failed after {took:.1f} s")

    _write(one_host, image, auth.replace("wrong-password", registry.password))
    # Within the test's own 300 s, so that a hang fails with the CLI's thread stacks (tests/support/cli.py)
    # rather than pytest-timeout's view of this process. The hang it caught: this PUT arriving while the
    # wrong-password replicas were being stopped left the rollout "running" for good
    # (tests/runtime/test_rollout_without_old.py).
    one_host.cli("up", "web", "--yes", timeout=200)
    outputs = one_host.outputs()
    assert set(_seen(outputs["endpoint"], outputs["token"], 6)) <= {f"replica {i} of {NAME} private" for i in range(4)}
    # The password is a secret in the stack's state: encrypted, never plaintext on disk there.
    state = one_host.root / ".gpustack" / "state"
    assert not [f for f in state.rglob("*") if f.is_file() and registry.password.encode() in f.read_bytes()]


def test_a_missing_image_fails_up_with_a_clear_error(one_host: Project) -> None:
    _write(one_host, "localhost/gpustack-no-such-image:1")
    failed = one_host.cli("up", "web", "--yes", check=False)
    assert failed.returncode != 0
    assert "localhost/gpustack-no-such-image:1" in failed.stderr and "pull failed" in failed.stderr, failed.stderr


# Rank 1 sends from a file, not from `echo |`: rank 0's nc has no input, so it half-closes as soon as it
# accepts, and busybox's nc exits on that FIN; reading from a pipe, it could see the FIN before `echo` had
# written, exit 0 having sent nothing, and leave rank 0 with an empty message (about 1 run in 6 on a loaded
# machine). A file is readable at the first poll, and busybox's nc sends its input before it reads the peer.
TASK = """\
type: task
name: {name}
nodes: 2
image: {image}
commands:
  - |
    if [ "$DSTACK_NODE_RANK" = 0 ]; then
      nc -l -p $MASTER_PORT > /tmp/got && echo "rank 0 got: $(cat /tmp/got)"
    else
      echo "hello from rank $DSTACK_NODE_RANK of $DSTACK_NODES_NUM" > /tmp/msg
      until nc $DSTACK_MASTER_NODE_IP $MASTER_PORT < /tmp/msg; do sleep 0.2; done
      echo "rank 1 sent"
    fi
resources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}
"""


def test_a_two_node_task_in_containers_meets_over_the_master_address(tmp_path: Path, engine: Engine,
                                                                       web_images: WebImages) -> None:
    with _task_project(tmp_path, engine, TASK.format(name=TASK_NAME, image=web_images.v1)) as project:
        up = project.cli("up", "task", "--yes", "--wait")
        assert f"task {TASK_NAME}: succeeded" in up.stdout, up.stdout
        logs = project.cli("logs", TASK_NAME).stdout
        assert "rank 0 got: hello from rank 1 of 2" in logs, logs
        project.cli("destroy", "--yes")
        assert _mine(engine, TASK_NAME) == []


@contextlib.contextmanager
def _task_project(tmp_path: Path, engine: Engine, task: str, data: dict[str, str] | None = None) -> Iterator[Project]:
    """The task example's fleet and `task` as train.gpustack.yml (with `data` files beside it); destroyed
    and every process under it stopped afterwards, also on failure."""
    root = tmp_path / "proj"
    config = root / "task"
    config.mkdir(parents=True)
    for rel, text in (data or {}).items():
        (config / rel).parent.mkdir(parents=True, exist_ok=True)
        (config / rel).write_text(text)
    shutil.copy(EXAMPLES / "task" / "fleet.gpustack.yml", config)
    (config / "train.gpustack.yml").write_text(task)
    project = Project(root=root, config=config, extra_env=dict(engine.env))
    try:
        yield project
    finally:
        project.cli("destroy", "--yes", check=False, timeout=300)
        kill_all(processes_under(root))


CODE_TASK = """\
type: task
name: {name}
image: {image}
files:
  - data:data
working_dir: /workflow/data
commands:
  - echo "in $(pwd) found $(cat hello.txt)"
resources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}
"""


def test_files_reach_an_image_task_at_workflow(tmp_path: Path, engine: Engine, web_images: WebImages) -> None:
    """dstack's `files:` with `image:`: the bundle unpacked on the host is bind-mounted at /workflow and the
    container works in `working_dir` there."""
    name = f"code-{uuid.uuid4().hex[:6]}"
    task = CODE_TASK.format(name=name, image=web_images.v1)
    with _task_project(tmp_path, engine, task, data={"data/hello.txt": "shipped with files\n"}) as project:
        up = project.cli("up", "task", "--yes", "--wait", check=False)
        logs = project.cli("logs", name, check=False).stdout
        assert f"task {name}: succeeded" in up.stdout, up.stdout + up.stderr + logs
        assert "in /workflow/data found shipped with files" in logs, logs
        project.cli("destroy", "--yes")
        assert _mine(engine, name) == []
