"""`plan` of an SSH fleet: each host's facts, probed over SSH, and placement checked against them."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

from tests.ssh.hosts import TestHosts
from tests.ssh.stack import GATEWAY, SERVICE, Stack


@pytest.fixture
def stack(ssh_hosts: TestHosts) -> Iterator[Stack]:
    root = ssh_hosts.root / f"plan-{os.urandom(3).hex()}"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "gateway.gpustack.yml").write_text(GATEWAY)
    yield Stack(root, ssh_hosts)
    shutil.rmtree(root, ignore_errors=True)


def test_plan_shows_each_hosts_facts_and_installs_nothing(stack: Stack, ssh_hosts: TestHosts) -> None:
    stack.write(["h1", "h2", "h3"])
    (stack.config / "service.gpustack.yml").write_text(SERVICE)
    out = stack.cli("plan", "conf").stdout
    assert "Hosts" in out
    for h in ssh_hosts.hosts:
        # (rich wraps long lines at the terminal's width; main's unwrapped output for pipes is not here yet)
        line = " ".join(out.split(f"{h.user}@{h.address}", 1)[1].split()[:9])
        assert "CPUs" in line and "GiB memory" in line and "no GPUs" in line, line
        assert h.installed_files() == []


def test_group_no_host_can_run_is_a_plan_error(stack: Stack, ssh_hosts: TestHosts) -> None:
    stack.write(["h1", "h2"])
    (stack.config / "service.gpustack.yml").write_text(SERVICE.replace(
        "  - name: burst\n    replicas: 1\n    resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}",
        "  - name: burst\n    replicas: 1\n    resources: {gpu: A100:80GB:1}"))
    result = stack.cli("plan", "conf", check=False)
    assert result.returncode == 1
    assert "group burst: no host can run a replica" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
