"""`gpustack-iac attach` on the local backend: a task serving HTTP on its port answers on the local
port `ports:` maps it to, until Ctrl-C, and the local port is closed afterwards."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import WideProject, example_project, http, wait_until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_attach_forwards_a_task_port_to_localhost_until_ctrl_c(tmp_path: Path) -> None:
    run_port, local_port = free_port(), free_port()
    with example_project(tmp_path, "task", kind=WideProject) as project:
        (project.config / "index.html").write_text("served by the task\n")
        (project.config / "train.gpustack.yml").write_text(textwrap.dedent(f"""\
            type: task
            name: train
            commands: [python3 -m http.server {run_port} --bind 127.0.0.1]
            ports: ["{local_port}:{run_port}"]
            resources: {{cpu: 1.., memory: 64MB.., disk: 0GB..}}
        """))
        project.cli("up", "task", "--yes")
        missing = project.cli("attach", "nope", check=False)
        assert missing.returncode != 0 and "no task 'nope'" in missing.stderr
        wait_until(lambda: listening(run_port), 60, what="the task's HTTP server")
        attach = subprocess.Popen([sys.executable, "-m", "gpustack_iac", "attach", "train"], cwd=project.root,
                                  env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert attach.stdout is not None
            line = attach.stdout.readline()
            assert f"port {run_port} on trainers-" in line and f"http://127.0.0.1:{local_port}" in line, line
            status, body = http("GET", f"http://127.0.0.1:{local_port}/index.html")
            assert status == 200 and body == b"served by the task\n"
            attach.send_signal(signal.SIGINT)
            assert attach.wait(timeout=30) == 0, attach.stderr.read() if attach.stderr else ""
        finally:
            if attach.poll() is None:
                attach.kill()
                attach.wait()
        assert not listening(local_port)
        assert listening(run_port)  # the task itself runs on
