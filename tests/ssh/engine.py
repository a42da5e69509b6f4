"""A container engine on an SSH test host, set up the way a real host has one: a root Podman
service (Docker's API) started in the host's network namespace, its socket group-owned by the
host's login user (as the `docker` group owns /var/run/docker.sock), and DOCKER_HOST in that
user's login environment (`create_hosts(engine=True)` puts it there).

The service enters only the network namespace (`nsenter --net`): under `ip netns exec`, runc finds
no cgroup mount. Containers it starts publish their ports inside the host's namespace, so the
agent there reaches them on 127.0.0.1 as it would on a real host.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

from tests.ssh.hosts import TestHost
from tests.support.containers import missing
from tests.support.wait import stop_group


def socket_path(host: TestHost) -> Path:
    return host.sshd_config.parent / "engine" / "podman.sock"


@contextlib.contextmanager
def host_engine(host: TestHost) -> Iterator[Path]:
    """Podman's API service for `host`, stopped by pid afterwards; yields its socket."""
    if host.netns is None or not host.net_only:
        missing("the SSH host needs its own network namespace, entered with nsenter --net (create_hosts(engine=True))")
    sock = socket_path(host)
    sock.parent.mkdir(mode=0o750, exist_ok=True)
    os.chown(sock.parent, 0, _gid(host.user))
    log_path = sock.parent / "service.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(host.in_host(["podman", "system", "service", "--time=0", f"unix://{sock}"]), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                missing(f"podman system service in {host.netns} did not start: {log_path.read_text()[-1000:]}")
            time.sleep(0.2)
        os.chown(sock, 0, _gid(host.user))
        sock.chmod(0o660)
        yield sock
    finally:
        stop_group(proc)


def _gid(user: str) -> int:
    import pwd  # noqa: PLC0415

    return pwd.getpwnam(user).pw_gid
