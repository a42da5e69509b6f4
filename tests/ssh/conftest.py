"""Fixtures for SSH fleets: three real sshd hosts for the whole session, torn down even on failure."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

from tests.ssh.hosts import SSHD, TestHosts, create_hosts


@pytest.fixture(scope="session")
def ssh_hosts(request: pytest.FixtureRequest) -> Iterator[TestHosts]:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server; .ci/run installs it)")
    if os.geteuid() != 0:
        pytest.skip("SSH test hosts need root (users, network namespaces)")
    hosts = create_hosts(3)
    request.addfinalizer(hosts.teardown)
    print(f"\nSSH test hosts ({hosts.mode}): " + ", ".join(f"{h.user}@{h.address}:{h.port}" for h in hosts.hosts))
    yield hosts
