"""procs: detached daemons with port files, identity by create_time, SIGTERM→grace→SIGKILL."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime import procs

# A tiny daemon: writes its port file, then idles; `IGNORE_TERM=1` makes it ignore SIGTERM.
DAEMON = """
import json, os, signal, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("daemon up", flush=True)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump({"port": 4242, "pid": os.getpid()}, f)
os.replace(tmp, sys.argv[1])
time.sleep(600)
"""


def start(tmp_path: Path, env: dict[str, str] | None = None) -> procs.DaemonInfo:
    port_file = tmp_path / "d.port"
    return procs.start_daemon(
        [sys.executable, "-c", DAEMON, str(port_file)],
        port_file=port_file,
        log_file=tmp_path / "d.log",
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_start_daemon_detaches_and_waits_for_the_port_file(tmp_path: Path) -> None:
    info = start(tmp_path)
    try:
        assert info.ports == {"port": 4242, "pid": info.pid}
        proc = psutil.Process(info.pid)
        assert proc.ppid() != os.getpid()  # re-parented: it outlives its starter
        assert os.getsid(info.pid) != os.getsid(0)  # own session: no terminal signals from ours
        assert procs.is_alive(info.pid, info.create_time)
        assert not procs.is_alive(info.pid, info.create_time + 5)  # same pid, other process
        deadline = time.monotonic() + 30
        while "daemon up" not in info.log_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "daemon up" in info.log_file.read_text()
    finally:
        assert procs.stop_process(info.pid, info.create_time, grace=10)
    assert not procs.is_alive(info.pid, info.create_time)
    assert procs.stop_process(info.pid, info.create_time) is False  # already gone


def test_stop_escalates_to_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    info = start(tmp_path, {"IGNORE_TERM": "1"})
    try:
        began = time.monotonic()
        assert procs.stop_process(info.pid, info.create_time, grace=1.0)
        assert time.monotonic() - began >= 1.0
        assert not procs.is_alive(info.pid, info.create_time)
    finally:
        procs.stop_process(info.pid, info.create_time, grace=0)


def test_a_pid_with_another_create_time_is_left_alone(tmp_path: Path) -> None:
    info = start(tmp_path)
    try:
        assert procs.stop_process(info.pid, info.create_time - 100, grace=1) is False
        assert procs.is_alive(info.pid, info.create_time)
    finally:
        procs.stop_process(info.pid, info.create_time, grace=5)


def test_a_daemon_that_dies_early_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeApiError) as exc:
        procs.start_daemon(
            [sys.executable, "-c", "import sys; print('bad config: missing token'); sys.exit(2)"],
            port_file=tmp_path / "x.port",
            log_file=tmp_path / "x.log",
            timeout=60,
        )
    assert "exited before it was ready" in str(exc.value)
    assert "bad config: missing token" in str(exc.value)


def test_a_daemon_that_never_writes_its_port_file_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(RuntimeApiError) as exc:
        procs.start_daemon(
            [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"],
            port_file=tmp_path / "y.port",
            log_file=tmp_path / "y.log",
            timeout=2,
        )
    assert "did not write" in str(exc.value)
    pid = int((tmp_path / "y.log").read_text().split()[0])
    assert not procs.is_alive(pid, None)


def test_port_file_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "p.json"
    assert procs.read_port_file(path) is None
    procs.write_port_file(path, {"port": 1, "control_port": 2, "pid": 3})
    assert procs.read_port_file(path) == {"port": 1, "control_port": 2, "pid": 3}
    path.write_text("[1, 2]")
    assert procs.read_port_file(path) is None
