"""`${{ secrets.X }}` and `files:` on an SSH fleet host (a network-namespace sshd): the code is
uploaded to the host user's `~/.gpustack/code/` and the replica runs there; the secret reaches its
environment; `plan`, `logs` and every process's command line (the host's included) never show it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import http
from tests.e2e.test_dstack_secrets import APP, SECRET
from tests.ssh.hosts import TestHosts
from tests.ssh.stack import GATEWAY, Stack

pytestmark = pytest.mark.slow

SERVICE = """type: service
name: hello
port: 8000
commands:
  - python3 app.py
env:
  HF_TOKEN: ${{ secrets.HF_TOKEN }}
files:
  - src:.
probes:
  - url: /
    interval: 1
replicas:
  - count: 1
    resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
"""


def _cmdlines() -> str:
    import psutil

    return "\n".join(" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))


def test_secret_reaches_a_replica_on_an_ssh_host(ssh_hosts: TestHosts) -> None:
    host = ssh_hosts.hosts[0]
    host.mark()
    root = ssh_hosts.root / "secrets-project"
    (root / "conf").mkdir(parents=True)
    root.chmod(0o755)
    (root / "conf").chmod(0o755)
    (root / "conf" / "src").mkdir()
    (root / "conf" / "src" / "app.py").write_text(APP)
    (root / "conf" / "gateway.gpustack.yml").write_text(GATEWAY)
    (root / "conf" / "service.dstack.yml").write_text(SERVICE)
    stack = Stack(root, ssh_hosts)
    stack.write([host.name])
    try:
        missing = stack.cli("plan", "conf", check=False)
        assert missing.returncode == 1 and "secret HF_TOKEN is not set" in missing.stderr, missing.stderr
        done = subprocess.run([sys.executable, "-m", "gpustack_iac", "secret", "set", "HF_TOKEN", "--project", "conf"],
                              cwd=root, env=stack.env, input=SECRET, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        plan = stack.cli("plan", "conf")
        up = stack.cli("up", "conf", "--yes", timeout=600)
        out = stack.outputs()
        status, body = http("GET", out["endpoint"] + "/", out["token"])
        assert status == 200, body
        seen = json.loads(body)
        assert seen["sha"] == hashlib.sha256(SECRET.encode()).hexdigest()
        assert seen["files"] == ["app.py"] and seen["cwd"].startswith(f"{host.home}/.gpustack/code/"), seen
        logs = stack.cli("logs", "hello").stdout
        assert "request /" in logs
        for text in (plan.stdout, plan.stderr, up.stdout, up.stderr, logs, _cmdlines()):
            assert SECRET not in text
    finally:
        stack.cli("destroy", "--yes", check=False, timeout=300)
    assert host.installed_files() == []
    assert host.wait_only_sshd() == []
