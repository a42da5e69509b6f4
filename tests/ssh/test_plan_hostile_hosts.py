"""`plan` of an SSH fleet whose hosts misbehave (issue 19 item 8), through the CLI itself.

Three loopback listeners stand in for hosts: one accepts TCP and closes, one answers with lines that
are not an SSH banner, one accepts and never answers. docs/ssh-fleets.md promises that a host that
cannot be reached is shown as "facts unknown" and left out of the placement check (a plan that
removes a dead host must still work): `plan` exits 0 with one line per host naming it and saying
what happened there, and no paramiko traceback anywhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpustack_iac.providers.sshconn import CONNECT_TIMEOUT

REPO = Path(__file__).resolve().parents[2]
# Distinct loopback addresses: a fleet lists each hostname once.
BEHAVIOURS = {"closes": "127.0.0.1", "garbage": "127.0.0.2", "silent": "127.0.0.3"}


@pytest.fixture
def hostile_hosts() -> Iterator[dict[str, int]]:
    """behaviour -> port of a listener that behaves so; all closed at teardown."""
    servers: dict[str, socket.socket] = {}
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve(kind: str, server: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if kind == "closes":
                conn.close()
            elif kind == "garbage":
                try:  # what an HTTP server on the SSH port would say, more lines than paramiko reads
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n" * 120)
                except OSError:
                    pass
                conn.close()
            else:
                held.append(conn)  # open and silent until teardown

    threads = []
    for kind, address in BEHAVIOURS.items():
        server = socket.create_server((address, 0))
        server.settimeout(0.2)
        servers[kind] = server
        threads.append(threading.Thread(target=serve, args=(kind, server), daemon=True))
    for t in threads:
        t.start()
    try:
        yield {kind: s.getsockname()[1] for kind, s in servers.items()}
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for s in [*servers.values(), *held]:
            s.close()


@pytest.mark.slow  # one plan, waiting out the silent host's handshake timeout
def test_plan_names_each_misbehaving_host_in_one_line_without_a_traceback(hostile_hosts: dict[str, int], tmp_path: Path) -> None:
    fleet = tmp_path / "fleet" / "fleet.gpustack.yml"
    fleet.parent.mkdir()
    hosts = "".join(f"    - {{hostname: {BEHAVIOURS[k]}, port: {p}}}\n" for k, p in hostile_hosts.items())
    fleet.write_text(f"type: fleet\nname: f\nssh_config:\n  user: nobody\n  hosts:\n{hosts}")
    done = subprocess.run([sys.executable, "-m", "gpustack_iac", "plan", str(fleet.parent), "--state-dir", str(tmp_path / "st")],
                          cwd=tmp_path, env={**os.environ, "COLUMNS": "400"},  # one host, one line
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out and "paramiko" not in out, out
    expected = {
        "closes": "the port closed the connection without an SSH banner",
        "garbage": 'not an SSH server: it sent "HTTP/1.1 400 Bad Request"',
        "silent": f"no SSH handshake within {CONNECT_TIMEOUT:g} s",
    }
    for kind, port in hostile_hosts.items():
        where = f"nobody@{BEHAVIOURS[kind]}:{port}"
        lines = [ln.strip() for ln in out.splitlines() if where in ln]
        assert len(lines) == 1, (kind, out)
        assert "facts unknown: unreachable (" in lines[0] and expected[kind] in lines[0], (kind, lines[0])
