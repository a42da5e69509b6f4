"""The watchdog: restarts a killed daemon at once on the same socket, keeps pid files, filters the
environment, refuses a second copy, and stops its child on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gpustack_iac.runtime import procs, supervised
from gpustack_iac.runtime.watchdog import EXIT_ALREADY_RUNNING, backoff_delay, live_pid
from conftest import APPS_DIR, http_get, wait_until

SECRETS = {"GPUSTACK_PASSPHRASE": "pp", "PULUMI_CONFIG_PASSPHRASE": "pp2", "AWS_SECRET_ACCESS_KEY": "aws",
           "KUBECONFIG": "/kube", "GITHUB_TOKEN": "tok", "GOOGLE_APPLICATION_CREDENTIALS": "/g", "AZURE_CLIENT_SECRET": "az"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[tuple[supervised.Paths, list[str], dict[str, tuple[str, int]]]]:
    paths = supervised.Paths.in_dir(tmp_path, "demo")
    port = _free_port()
    argv = [sys.executable, str(APPS_DIR / "listen_daemon.py"), "--port", str(port),
            "--port-file", str(paths.port_file), "--env-file", str(tmp_path / "env.json")]
    try:
        yield paths, argv, {"port": ("127.0.0.1", port)}
    finally:
        supervised.stop(paths, grace=2.0)


def _env() -> dict[str, str]:
    return {**os.environ, **SECRETS, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def test_backoff_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    assert [backoff_delay(n, 4.0) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_killed_child_is_back_at_once_on_the_same_socket(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths, argv, listen = daemon
    info = supervised.start(argv, paths, listen=listen, env=_env(), timeout=30)
    url = f"http://127.0.0.1:{info.ports['port']}/"
    assert json.loads(http_get(url)[1])["pid"] == info.child_pid
    assert live_pid(paths.pid_file) == (info.pid, info.create_time)

    child = live_pid(paths.child_pid_file)
    assert child is not None and child[0] == info.child_pid
    killed_at = time.time()
    os.kill(info.child_pid, signal.SIGKILL)
    # The watchdog holds the listening socket: this request waits in the backlog, it is not refused.
    status, body = http_get(url, timeout=30)
    assert status == 200
    new_pid = json.loads(body)["pid"]
    assert new_pid != info.child_pid
    restarted = live_pid(paths.child_pid_file)
    assert restarted is not None and restarted[0] == new_pid
    # The first restart is immediate: the new child exists well within 2 s of the kill.
    assert restarted[1] - killed_at < 2.0, restarted[1] - killed_at
    assert json.loads(paths.child_pid_file.read_text())["restarts"] == 1
    assert "restarting in 0.0s" in paths.log_file.read_text()


def test_child_environment_is_allow_listed(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths, argv, listen = daemon
    info = supervised.start(argv, paths, listen=listen, env=_env(), timeout=30)
    environ = psutil.Process(info.child_pid).environ()
    for name in SECRETS:
        assert name not in environ, name
    assert "PATH" in environ and environ["GPUSTACK_LISTEN_FDS"].startswith("port=")


def test_second_start_adopts_and_a_second_watchdog_is_refused(daemon) -> None:  # type: ignore[no-untyped-def]
    paths, argv, listen = daemon
    first = supervised.adopt_or_start(argv, paths, listen=listen, env=_env(), timeout=30)
    again = supervised.adopt_or_start(argv, paths, listen=listen, env=_env(), timeout=30)
    assert again.adopted and (again.pid, again.child_pid) == (first.pid, first.child_pid)

    # Started by hand beside the running one: it exits 3 and starts nothing.
    other = subprocess.run([sys.executable, "-m", "gpustack_iac.runtime.watchdog", "--pid-file", str(paths.pid_file),
                            "--child-pid-file", str(paths.child_pid_file), "--", *argv],
                           capture_output=True, text=True, timeout=30, env=_env())
    assert other.returncode == EXIT_ALREADY_RUNNING, other.stderr
    assert str(first.pid) in other.stderr
    assert live_pid(paths.child_pid_file) is not None and live_pid(paths.child_pid_file)[0] == first.child_pid  # type: ignore[index]


def test_sigterm_stops_child_and_removes_pid_files(daemon) -> None:  # type: ignore[no-untyped-def]
    paths, argv, listen = daemon
    info = supervised.start(argv, paths, listen=listen, env=_env(), timeout=30)
    assert procs.stop_process(info.pid, info.create_time, grace=15.0)
    wait_until(lambda: not procs.is_alive(info.child_pid, None), 15, what="child gone")
    assert not paths.pid_file.exists() and not paths.child_pid_file.exists()


def test_start_after_kill_9_of_a_watchdog_that_had_restarted_its_child(daemon) -> None:  # type: ignore[no-untyped-def]
    paths, argv, listen = daemon
    info = supervised.start(argv, paths, listen=listen, env=_env(), timeout=30)
    # One restart first, so the child pid file the killed watchdog leaves says "restarts": 1.
    os.kill(info.child_pid, signal.SIGKILL)
    second = wait_until(lambda: (c := live_pid(paths.child_pid_file)) and c[0] != info.child_pid and c, 15, what="a restart")
    os.kill(info.pid, signal.SIGKILL)
    assert procs.wait_gone(info.pid, info.create_time, 15)
    again = supervised.adopt_or_start(argv, paths, listen=listen, env=_env(), timeout=30)
    assert not again.adopted and again.pid != info.pid
    assert not procs.is_alive(*second)  # went with its watchdog (or was stopped as a leftover)


def test_kill_9_of_the_watchdog_takes_its_child_along(daemon) -> None:  # type: ignore[no-untyped-def]
    paths, argv, listen = daemon
    info = supervised.start(argv, paths, listen=listen, env=_env(), timeout=30)
    os.kill(info.pid, signal.SIGKILL)
    wait_until(lambda: not procs.is_alive(info.child_pid, None), 15, what="child gone with its watchdog")
    # The stale pid files are recognised as such; a new start is a fresh watchdog, not an adoption.
    again = supervised.adopt_or_start(argv, paths, listen=listen, env=_env(), timeout=30)
    assert not again.adopted and again.pid != info.pid


def test_a_daemon_whose_files_were_deleted_is_stopped_not_duplicated(daemon) -> None:  # type: ignore[no-untyped-def]
    paths, argv, listen = daemon
    info = supervised.start(argv, paths, listen=listen, env=_env(), timeout=30)
    for path in (paths.pid_file, paths.child_pid_file, paths.port_file):
        path.unlink()
    again = supervised.adopt_or_start(argv, paths, listen=listen, env=_env(), timeout=30)
    assert not again.adopted
    assert not procs.is_alive(info.pid, info.create_time) and not procs.is_alive(info.child_pid, None)
    assert set(supervised.strays(paths)) == {again.pid, again.child_pid}


def test_a_taken_port_fails_the_start_with_port_in_use(daemon) -> None:  # type: ignore[no-untyped-def]
    """Between a starter's pick of a free port and the watchdog's bind, another process can take it: the
    start fails with the typed error, so a starter that picked the port can pick another
    (providers/local.py)."""
    paths, argv, listen = daemon
    with socket.socket() as taken:
        taken.bind(listen["port"])
        taken.listen(1)
        with pytest.raises(supervised.PortInUse, match="port in use"):
            supervised.start(argv, paths, listen=listen, env=_env(), timeout=30)
