"""The harness itself: every test host answers over real SSH as its own user, with a verified host key."""

from __future__ import annotations

import subprocess

from tests.ssh.hosts import TestHosts


def test_each_host_answers_as_its_own_user(ssh_hosts: TestHosts) -> None:
    for h in ssh_hosts.hosts:
        out = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={ssh_hosts.known_hosts}",
             "-i", str(ssh_hosts.client_key), "-p", str(h.port), f"{h.user}@{h.address}", "echo $HOME; whoami"],
            capture_output=True, text=True, timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(h.home), h.user]
