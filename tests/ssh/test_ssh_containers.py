"""An `image:` service on an SSH fleet host with a container engine, end to end through the real CLI.

The host is a network namespace with its own sshd and its own Podman service (tests/ssh/engine.py),
found by the agent the way a real host's is: DOCKER_HOST in the SSH user's login environment. Two
replicas listen on the declared port 8000 in ONE host; the agent publishes a free port to each.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from gpustack_iac.runtime.agent import engine as engine_client
from tests.e2e.conftest import http, processes_under
from tests.ssh.engine import host_engine
from tests.ssh.hosts import SSHD, TestHosts, create_hosts
from tests.ssh.stack import GATEWAY, Stack
from tests.support.containers import Engine, build_image, missing

pytestmark = pytest.mark.slow
SCHEDULING_UNIT = "podman"  # one worker at a time uses Podman (tests/conftest.py)

NAME = f"sweb{uuid.uuid4().hex[:6]}"
WEB = f"""\
type: service
name: {NAME}
port: 8000
image: {{image}}
replicas: 2
commands:
  - echo "replica $DSTACK_REPLICA_NUM $(cat /version)" > /www/index.html
  - echo ok > /www/health
  - exec httpd -f -p 8000 -h /www
probes:
  - url: /health
    interval: 1
resources: {{{{cpu: 1.., memory: 64MB.., disk: 0GB..}}}}
"""


@pytest.fixture(scope="module")
def engine_host() -> Iterator[tuple[TestHosts, Engine]]:
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        missing("SSH hosts with a container engine need root and openssh-server")
    hosts = create_hosts(1, engine=True)
    try:
        if hosts.mode != "netns":
            missing("network namespaces are unavailable")
        with host_engine(hosts.hosts[0]) as sock:
            env = {"DOCKER_HOST": f"unix://{sock}"}
            yield hosts, Engine(env=env, client=tuple(engine_client.client_argv({**os.environ, **env})))
    finally:
        hosts.teardown()


def test_an_image_service_runs_on_an_ssh_host_with_an_engine(engine_host: tuple[TestHosts, Engine]) -> None:
    hosts, engine = engine_host
    image = build_image(engine, f"localhost/gpustack-test-sshweb:{NAME}", {"/version": "on-ssh\n"})
    root = hosts.root / "project"
    (root / "conf").mkdir(parents=True)
    for p in (root, root / "conf"):
        p.chmod(0o755)
    (root / "conf" / "gateway.gpustack.yml").write_text(GATEWAY)
    (root / "conf" / "web.gpustack.yml").write_text(WEB.format(image=image))
    stack = Stack(root, hosts)
    stack.write(["h1"])
    mine = lambda: engine.containers(f"gpustack-{NAME}-")  # noqa: E731
    try:
        plan = stack.cli("plan", "conf")
        assert ", a container engine" in plan.stdout, plan.stdout
        stack.cli("up", "conf", "--yes", timeout=600)
        out = stack.outputs()
        seen: Counter[str] = Counter()
        for _ in range(20):
            status, body = http("GET", out["endpoint"] + "/", out["token"])
            assert status == 200, (status, body)
            seen[body.decode().strip()] += 1
        assert set(seen) == {"replica 0 on-ssh", "replica 1 on-ssh"}, seen
        assert len(mine()) == 2, mine()
        stack.cli("destroy", "--yes", timeout=600)
        assert mine() == []
        assert hosts.hosts[0].installed_files() == []
    finally:
        stack.cli("destroy", "--yes", check=False, timeout=300)
        engine.run("rmi", "--force", image, check=False)
    assert processes_under(Path(root)) == []
