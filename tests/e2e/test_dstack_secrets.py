"""A service written the way dstack writes it (`replicas:` groups with `count`, `${{ secrets.X }}`,
`files:`) and a task with `repos:` (a local git checkout) on the local backend: the secret reaches the
replica's environment, and neither `plan`, `logs`, the state files nor any process's command line
shows it; the code lands in the run's working directory with ignore files honoured, once per change."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from tests.e2e.conftest import Project, http, kill_all, processes_under

SECRET = "hf_e2e-" + hashlib.sha256(b"not a real token").hexdigest()[:24]

APP = '''
import hashlib, json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        token = os.environ.get("HF_TOKEN", "")
        files = sorted(os.path.join(d, f)[2:] for d, _, fs in os.walk(".") for f in fs)
        body = json.dumps({"sha": hashlib.sha256(token.encode()).hexdigest(), "files": files, "cwd": os.getcwd(),
                           "url_sha": hashlib.sha256(os.environ.get("URL", "").encode()).hexdigest()}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("request", self.path, flush=True)

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''

CONFIG = '''
type: fleet
name: box
backends: [local]
nodes: {min: 1, max: 1, target: 1}
resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
---
type: gateway
name: gw
backend: local
default: true
certificate: null
---
type: service
name: secretive
port: 8000
commands:
  - python3 app.py
env:
  HF_TOKEN: ${{ secrets.HF_TOKEN }}
  URL: https://user:${{ secrets.HF_TOKEN }}@example.com/
files:
  - src:.
  - notes.txt:/workflow/data/notes.txt
probes:
  - url: /
    interval: 2
replicas:
  - count: 1
    resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
---
type: task
name: listing
repos:
  - ./checkout
commands:
  - "find . -type f -not -path './.git/*' | sort | sed 's/^/shipped: /'"
resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}
'''


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def secret_project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "proj"
    config = root / "secretive"
    config.mkdir(parents=True)
    (config / "src").mkdir()
    (config / "src" / "app.py").write_text(APP)
    (config / "src" / "big.bin").write_bytes(b"x" * 4096)
    (config / "src" / ".dstackignore").write_text("*.bin\n")
    (config / "notes.txt").write_text("notes\n")
    checkout = config / "checkout"
    checkout.mkdir()
    (checkout / "train.py").write_text("print('train')\n")
    (checkout / ".gitignore").write_text("*.key\n")
    (checkout / "private.key").write_text("ignored\n")
    _git(checkout, "init", "-q")
    _git(checkout, "add", "train.py", ".gitignore")
    _git(checkout, "commit", "-q", "-m", "first")
    (checkout / "untracked.py").write_text("print('new')\n")
    (config / "stack.dstack.yml").write_text(CONFIG)
    project = Project(root=root, config=config)
    try:
        yield project
    finally:
        try:
            project.cli("destroy", "--yes", check=False, timeout=300)
        finally:
            kill_all(processes_under(root))


def _set_secret(project: Project, name: str, value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpustack_iac", "secret", "set", name, "--project", "secretive"],
                          cwd=project.root, env=project.env, input=value + "\n", capture_output=True, text=True, timeout=120)


def _cmdlines() -> str:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        out.append(" ".join(proc.info["cmdline"] or []))
    return "\n".join(out)


@pytest.mark.slow
def test_secret_reaches_replica_env_only(secret_project: Project) -> None:
    p = secret_project
    missing = p.cli("plan", "secretive", check=False)
    assert missing.returncode == 1
    assert "env.HF_TOKEN" in missing.stderr and "secret HF_TOKEN is not set" in missing.stderr, missing.stderr

    done = _set_secret(p, "HF_TOKEN", SECRET)
    assert done.returncode == 0 and "Created secret HF_TOKEN" in done.stdout, done.stderr
    assert p.cli("secret", "list", "--project", "secretive").stdout.split() == ["HF_TOKEN"]

    plan = p.cli("plan", "secretive")
    up = p.cli("up", "secretive", "--yes", "--wait")
    assert "task listing: succeeded" in up.stdout, up.stdout
    endpoint, token = p.outputs()["endpoint"], p.outputs()["token"]
    status, body = http("GET", endpoint + "/", token)
    assert status == 200, body
    seen = json.loads(body)
    # files: the directory's content at the working directory's root (its .dstackignore honoured), the
    # single file where its path says; the replica runs there.
    assert seen["files"] == [".dstackignore", "app.py", "data/notes.txt"], seen["files"]
    assert "/code/" in seen["cwd"] and not seen["cwd"].startswith(str(p.config))
    # repos: what git ships (tracked and untracked files, .gitignore honoured), nothing else.
    shipped = [line.split("shipped: ", 1)[1] for line in p.cli("logs", "listing").stdout.splitlines() if "shipped: " in line]
    assert shipped == ["./.gitignore", "./train.py", "./untracked.py"], shipped
    # Unchanged code is not shipped again: the next plan has nothing to do.
    assert p.cli("plan", "secretive", "--detailed-exitcode", check=False).returncode == 0
    assert seen["sha"] == hashlib.sha256(SECRET.encode()).hexdigest()
    assert seen["url_sha"] == hashlib.sha256(f"https://user:{SECRET}@example.com/".encode()).hexdigest()

    logs = p.cli("logs", "secretive").stdout
    assert "request /" in logs
    status_out = p.cli("status").stdout
    for text in (plan.stdout, plan.stderr, up.stdout, up.stderr, logs, status_out, _cmdlines()):
        assert SECRET not in text
    # The state location (checkpoint, journal, run-secrets file) never holds it in the clear; the
    # runtime's own records on the host (which restart the replica) are readable by the runtime only.
    for path in p.root.rglob("*"):
        if path.is_file() and path.stat().st_size < 20_000_000 and SECRET.encode() in path.read_bytes():
            assert ".gpustack/state" not in str(path) and not path.name.endswith(".log"), path
            assert path.stat().st_mode & 0o077 == 0, path
    assert (p.root / ".gpustack" / "state" / ".pulumi" / "stacks" / "secretive" / "dev.run-secrets.json").stat().st_mode & 0o077 == 0

    # A deleted secret fails the next plan, naming it.
    assert p.cli("secret", "delete", "HF_TOKEN", "--project", "secretive").returncode == 0
    again = p.cli("plan", "secretive", check=False)
    assert again.returncode == 1 and "secret HF_TOKEN is not set" in again.stderr
