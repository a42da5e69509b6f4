"""Tasks on an SSH fleet, end to end through the real CLI on the SSH test hosts (real sshd in
network namespaces): the ranks of a two-node task rendezvous over TCP on the hosts' own addresses,
the task runner on this machine reaching each agent through an SSH forward."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLES, http, processes_under, wait_until
from tests.ssh.hosts import TestHosts
from tests.ssh.stack import Stack

pytestmark = pytest.mark.slow


def _task_yaml(script: str, fail_rank: int | None = None) -> str:
    # The configuration's directory is on this machine, not on the hosts: the script travels inline.
    body = "\n".join("    " + line for line in script.splitlines())
    env = f"env: [FAIL_RANK={fail_rank}]\n" if fail_rank is not None else ""
    return (f"type: task\nname: train\nnodes: 2\n{env}commands:\n  - |\n    python3 - <<'PY'\n{body}\n    PY\n"
            "resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}\n")


def _fresh_stack(ssh_hosts: TestHosts, name: str) -> Stack:
    root = ssh_hosts.root / name
    (root / "conf").mkdir(parents=True)
    for p in (root, root / "conf"):
        p.chmod(0o755)
    for h in ssh_hosts.hosts:
        h.mark()
    stack = Stack(root, ssh_hosts)
    stack.write(["h1", "h2"])
    return stack


def _clean(ssh_hosts: TestHosts) -> None:
    for h in ssh_hosts.hosts:
        assert h.installed_files() == [], (h.name, h.installed_files())
        left = h.wait_only_sshd()
        assert left == [], (h.name, left)


def test_two_node_task_rendezvous_on_ssh_hosts(ssh_hosts: TestHosts) -> None:
    if ssh_hosts.mode != "netns":
        pytest.skip("needs hosts with their own addresses (network namespaces)")
    stack = _fresh_stack(ssh_hosts, "task-project")
    script = (EXAMPLES / "task" / "rendezvous.py").read_text()
    (stack.config / "train.gpustack.yml").write_text(_task_yaml(script))
    try:
        up = stack.cli("up", "conf", "--yes", "--wait", check=False, timeout=300)
        assert "task train: succeeded" in up.stdout, up.stdout + stack.cli("logs", "train", check=False).stdout
        h1, h2 = ssh_hosts.hosts[0], ssh_hosts.hosts[1]
        logs = stack.cli("logs", "train").stdout
        # Rank 0 is on one host, rank 1 on the other; the master is rank 0's 198.18 address, not loopback.
        status = json.loads((Path(stack.outputs()["tasks"]["train"]) / "status.json").read_text())
        nodes = status["attempts"][0]["nodes"]
        assert len({n["host"] for n in nodes}) == 2, nodes
        master = h1 if h1.address.replace(".", "-") in nodes[0]["host"] else h2
        assert f"rank 0/2: master {master.address}:" in logs, logs
        # The port rank 0's agent found free on its host, not a fixed one.
        assert f"rank 0/2: master {master.address}:29500" not in logs, logs
        assert "[node 0] rank 0: got 'hello from rank 1'" in logs, logs
        assert "[node 1] rank 1: got 'welcome from rank 0 to 1'" in logs, logs
        assert "succeeded" in stack.cli("status").stdout

        # A failing rank fails the task and stops the other.
        (stack.config / "train.gpustack.yml").write_text(_task_yaml(script, fail_rank=1))
        up = stack.cli("up", "conf", "--yes", "--wait", check=False, timeout=300)
        assert up.returncode == 1, up.stdout + up.stderr
        status = json.loads((Path(stack.outputs()["tasks"]["train"]) / "status.json").read_text())
        assert status["state"] == "failed" and "exited with code 3" in status["reason"], status
    finally:
        stack.cli("destroy", "--yes", check=False, timeout=300)
    _clean(ssh_hosts)
    assert processes_under(stack.root) == []  # no runner, no SSH forward left on this machine


VOLUME = """type: volume
name: notes
backend: ssh
host: {host}
size: 1GB
auto_cleanup: {cleanup}
"""

VOLUME_TASK = """type: task
name: notes-job
env: [STEP={step}]
volumes: [notes:/notes]
commands:
  - if [ "$STEP" = write ]; then echo "kept on $(hostname -I 2>/dev/null | cut -d' ' -f1)" > "$GPUSTACK_MOUNT_NOTES/note"; fi
  - echo "read back - $(cat "$GPUSTACK_MOUNT_NOTES/note")"
resources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}
"""


def test_volume_on_an_ssh_host_is_written_read_and_kept(ssh_hosts: TestHosts) -> None:
    stack = _fresh_stack(ssh_hosts, "volume-project")
    h2 = ssh_hosts.hosts[1]
    volume_dir = h2.home / ".gpustack-volumes" / "conf-dev-notes"
    (stack.config / "notes.gpustack.yml").write_text(VOLUME.format(host=h2.address, cleanup="false"))
    (stack.config / "job.gpustack.yml").write_text(VOLUME_TASK.format(step="write"))
    try:
        up = stack.cli("up", "conf", "--yes", "--wait", check=False, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr + stack.cli("logs", "notes-job", check=False).stdout
        # The directory is on the volume's host (in its user's home), the task ran there.
        assert (volume_dir / "note").read_text().startswith("kept on"), list(volume_dir.iterdir())
        status = json.loads((Path(stack.outputs()["tasks"]["notes-job"]) / "status.json").read_text())
        assert status["attempts"][0]["nodes"][0]["host"].endswith(h2.address.replace(".", "-"))

        # A new run (changed spec) reads what the first one wrote.
        (stack.config / "job.gpustack.yml").write_text(VOLUME_TASK.format(step="read"))
        stack.cli("up", "conf", "--yes", "--wait", timeout=300)
        assert "read back - kept on" in stack.cli("logs", "notes-job").stdout

        # destroy keeps the data (no auto_cleanup) and says so ...
        destroy = stack.cli("destroy", "--yes", timeout=300)
        assert "notes" in destroy.stdout and "kept" in destroy.stdout, destroy.stdout
        assert (volume_dir / "note").exists()
        # ... and a later stack adopts it; with auto_cleanup its destroy deletes it.
        (stack.config / "notes.gpustack.yml").write_text(VOLUME.format(host=h2.address, cleanup="true"))
        stack.cli("up", "conf", "--yes", "--wait", timeout=300)
        assert "read back - kept on" in stack.cli("logs", "notes-job").stdout
    finally:
        stack.cli("destroy", "--yes", check=False, timeout=300)
    assert not volume_dir.exists()
    _clean(ssh_hosts)
    assert processes_under(stack.root) == []


DEV = """type: dev-environment
name: box
ide: vscode
env: [GREETING=hello-from-box]
init:
  - echo init-ran > /dev/null
resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
"""


def test_dev_environment_on_an_ssh_host_through_the_fleets_ssh(ssh_hosts: TestHosts) -> None:
    stack = _fresh_stack(ssh_hosts, "dev-project")
    stack.write(["h3"])
    h3 = ssh_hosts.hosts[2]
    (stack.config / "dev.gpustack.yml").write_text(DEV)
    try:
        up = stack.cli("up", "conf", "--yes", timeout=300)
        assert "gpustack-iac ssh box" in up.stdout and "vscode://vscode-remote/ssh-remote+box" in up.stdout, up.stdout
        # A real ssh client, through the fleet host's own sshd as a jump, into the dev environment's sshd
        # on that host's loopback; it runs as the fleet's user, in the host's network namespace.
        ran = stack.cli("ssh", "box", "--", "echo $GREETING; id -un; hostname -I", timeout=120)
        words = ran.stdout.split()
        assert words[:2] == ["hello-from-box", h3.user], ran.stdout + ran.stderr
        if ssh_hosts.mode == "netns":
            assert h3.address in words, ran.stdout
        # status asks the host's agent through SSH (no status file here for an SSH host).
        status = stack.cli("status", "--format", "json").stdout
        dev = json.loads(status)["dev_environments"]["box"]
        assert dev["status"]["state"] == "running" and "agents" not in dev, dev
        config = stack.root / "ssh_config"
        stack.cli("ssh", "box", "--write-config", "--ssh-config", str(config))
        assert "ProxyCommand ssh -W %h:%p" in config.read_text()
    finally:
        stack.cli("destroy", "--yes", check=False, timeout=300)
    _clean(ssh_hosts)
    assert processes_under(stack.root) == []


@pytest.mark.timeout(900)  # a wheelhouse, an `up` over SSH and a `destroy`: about 5 minutes on a busy machine
def test_attach_forwards_a_task_port_from_an_ssh_host(ssh_hosts: TestHosts) -> None:
    """`attach` reaches a node on an SSH fleet host through `ssh -L`, trusting only the host key
    verified at provisioning; the task's server listens on that host's loopback only."""
    if ssh_hosts.mode != "netns":
        pytest.skip("needs hosts with their own loopback (network namespaces)")
    stack = _fresh_stack(ssh_hosts, "attach-project")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = int(s.getsockname()[1])
    # The server answers with the host's addresses and writes no file (the host must end up clean).
    (stack.config / "serve.gpustack.yml").write_text(
        "type: task\nname: serve\ncommands:\n  - |\n    exec python3 - <<'PY'\n" + SERVE_WHO + "    PY\n"
        f"ports: ['{local}:8123']\nresources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}\n")
    attach = None
    try:
        stack.cli("up", "conf", "--yes", timeout=300)
        attach = subprocess.Popen([sys.executable, "-m", "gpustack_iac", "attach", "serve"], cwd=stack.root, env=stack.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert attach.stdout is not None
        line = attach.stdout.readline()
        assert f"http://127.0.0.1:{local}" in line, line + (attach.stderr.read() if attach.poll() is not None else "")
        # The server may still be starting on the host: ask until it answers.
        got = wait_until(lambda: _answer(f"http://127.0.0.1:{local}/who"), 60, what="the task's server through attach")
        assert any(h.address in got[1].decode() for h in ssh_hosts.hosts[:2]), got
        attach.send_signal(signal.SIGINT)
        assert attach.wait(timeout=30) == 0
    finally:
        if attach is not None and attach.poll() is None:
            attach.kill()
            attach.wait()
        stack.cli("destroy", "--yes", check=False, timeout=300)
    _clean(ssh_hosts)
    assert processes_under(stack.root) == []  # no ssh -L left behind


SERVE_WHO = """\
    import http.server, subprocess
    who = subprocess.run(["hostname", "-I"], capture_output=True).stdout
    class Who(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(who)
    http.server.HTTPServer(("127.0.0.1", 8123), Who).serve_forever()
"""


def _answer(url: str) -> tuple[int, bytes] | None:
    try:
        got = http("GET", url, timeout=5)
    except OSError:
        return None
    return got if got[0] == 200 else None
