"""A dev environment on the local backend, reached by a real `ssh` client."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import Project, WideProject, example_project, port_in_use, wait_until

pytestmark = pytest.mark.slow


class HomeProject(WideProject):
    """A project whose HOME is its own: no real ~/.ssh is read or written."""

    idle_s: int = 8  # the dev environment's inactivity duration, set by the fixture

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "HOME": str(self.root / "home")}


def idle_seconds_for(project: Project) -> int:
    """An inactivity duration the test's own steps cannot outlast on this machine, busy or idle.

    The timer runs from the last session (before the first one the environment waits at least
    runtime/devenv/idle.py's FIRST_SESSION_WAIT_S, however long `up` and the first CLI call take); the
    longest gaps between the test's sessions are one CLI start each. So it is sized from one measured CLI
    call, never below 8 s (what an idle machine needs) and capped so the final wait stays bounded."""
    started = time.monotonic()
    project.cli("validate", "dev")
    one_call = time.monotonic() - started
    return int(min(120, max(8, 6 * one_call)))


@pytest.fixture
def dev_project(tmp_path: Path) -> Iterator[HomeProject]:
    (tmp_path / "proj" / "home").mkdir(parents=True)
    with example_project(tmp_path, "dev-environment", "dev", kind=HomeProject) as project:
        config = project.config / "workbench.gpustack.yml"
        idle = idle_seconds_for(project)
        config.write_text(config.read_text().replace("inactivity_duration: 30m", f"inactivity_duration: {idle}s"))
        assert isinstance(project, HomeProject)
        project.idle_s = idle
        yield project


@pytest.mark.timeout(900)  # about ten CLI runs and an `up`: minutes on a busy machine
@pytest.mark.skipif(not Path("/usr/sbin/sshd").exists() or shutil.which("ssh") is None, reason="needs OpenSSH")
def test_dev_environment_over_ssh_then_stops_when_idle(dev_project: HomeProject) -> None:
    up = dev_project.cli("up", "dev", "--yes")
    assert "vscode://vscode-remote/ssh-remote+workbench/" in up.stdout
    info = dev_project.outputs()["dev_environments"]["workbench"]
    # Checked without connecting: a TCP probe is a session to the dev environment (see the end).
    assert info["address"] == "127.0.0.1" and port_in_use(int(info["port"]))
    # `gpustack-iac ssh NAME -- COMMAND` through the real ssh client, host key verified.
    ran = dev_project.cli("ssh", "workbench", "--", "echo", "$GREETING;", "cat", str(dev_project.config / ".init-done"))
    assert "hello from the workbench" in ran.stdout
    assert "init ran at" in ran.stdout
    # An SSH config entry, then plain `ssh workbench` (what the IDE link uses).
    ssh_config = dev_project.root / "home" / ".ssh" / "config"
    dev_project.cli("ssh", "workbench", "--write-config", "--ssh-config", str(ssh_config))
    plain = subprocess.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "workbench", "hostname && echo plain-ok"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert plain.returncode == 0, plain.stderr
    assert "plain-ok" in plain.stdout
    assert "Host workbench" in ssh_config.read_text()
    # A wrong key is refused: only the user's key is authorized.
    other = dev_project.root / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    refused = subprocess.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "-o", f"IdentityFile={other}",
                              "-o", "IdentitiesOnly=yes", "-i", str(other), "-p", str(info["port"]),
                              "-o", "IdentityAgent=none", f"{info['user']}@127.0.0.1", "true"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                             env={"HOME": str(dev_project.root / "home"), "PATH": "/usr/bin:/bin"})
    assert refused.returncode != 0
    status = dev_project.cli("status").stdout
    assert "workbench" in status and "running" in status
    # No session for the inactivity duration: it stops, and status says why.
    idle = dev_project.idle_s
    # Watched without connecting: each TCP probe makes sshd fork a connection process, which the dev
    # environment counts as a session, so on a slow machine probing every 0.5 s kept it alive.
    wait_until(lambda: not port_in_use(int(info["port"])), 60 + 2 * idle, interval=0.5, what="sshd to stop after inactivity")
    wait_until(lambda: f"no SSH session for {idle} s" in dev_project.cli("status").stdout, 60, what="status to say why it stopped")
