"""The HAProxy process: master-worker mode, started and stopped by pid, reloaded with USR2.

On a reload the master starts a new worker with the new configuration; the new worker takes the
listening sockets over the admin socket (`expose-fd listeners`), the old one finishes its
connections and exits, so no connection is refused or cut. Nothing secret is on the command line.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.gateway.haproxy.runtime_api import RuntimeApi, RuntimeApiError

MIN_VERSION = (2, 6)
START_TIMEOUT_S = 20.0  # generous: a shared machine
RELOAD_TIMEOUT_S = 10.0


class HaproxyError(GpustackError):
    """HAProxy is missing, too old, refused its configuration, or did not start."""


def haproxy_version(binary: str = "haproxy") -> tuple[int, int] | None:
    """(major, minor) of `binary` on PATH, or None when there is none."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"version (\d+)\.(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else None


def usable(binary: str = "haproxy") -> bool:
    version = haproxy_version(binary)
    return version is not None and version >= MIN_VERSION


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the gateway dies, even by SIGKILL, so no HAProxy is orphaned."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class HaproxyProcess:
    def __init__(self, config: Path, api: RuntimeApi, binary: str = "haproxy") -> None:
        self.config, self.api = config, api
        self.binary = shutil.which(binary) or binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = config.parent / "haproxy.log"

    @property
    def master_socket(self) -> Path:
        return self.config.parent / "master.sock"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def check(self) -> None:
        done = subprocess.run([self.binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
        if done.returncode != 0:
            raise HaproxyError(f"HAProxy refused the rendered configuration: {done.stderr.strip() or done.stdout.strip()}")

    def start(self, generation: int) -> None:
        self.check()
        fd = os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # private, like the rest of the directory
        with os.fdopen(fd, "ab") as log:
            master = f"{self.master_socket},mode,600"  # the master's CLI, private like the admin socket
            self._proc = subprocess.Popen([self.binary, "-W", "-S", master, "-f", str(self.config)], stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        self.wait_generation(generation)

    def reload(self, generation: int) -> None:
        """Signal the master and return once the new worker answers on the admin socket.

        The configuration is not checked first (`haproxy -c` costs as much as the reload itself, and
        the caller waits on the gateway's loop): the master keeps the old worker when the new file
        is refused, and the check runs then, for the message."""
        if self._proc is None:
            raise HaproxyError("HAProxy is not running")
        # Through the master's CLI rather than SIGUSR2: the master re-executes itself on a reload and a
        # signal arriving meanwhile is lost, while its socket answers only once it is ready again.
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        master = RuntimeApi(self.master_socket)
        while True:
            try:
                master.command("reload")
                break
            except RuntimeApiError:
                if time.monotonic() >= deadline or self._proc.poll() is not None:
                    raise HaproxyError(f"HAProxy's master did not take a reload; see {self._log}") from None
                time.sleep(0.02)
        try:
            self.wait_generation(generation, max(0.1, deadline - time.monotonic()))
        except HaproxyError:
            self.check()
            raise

    def wait_generation(self, generation: int, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        want = f"gen{generation}"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise HaproxyError(f"HAProxy exited with {self._proc.returncode}; see {self._log}")
            try:
                if self.api.info().get("description") == want:
                    return
            except RuntimeApiError:
                pass
            time.sleep(0.02)
        raise HaproxyError(f"HAProxy did not take configuration {want} within {timeout:.0f} s; see {self._log}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGUSR1 (soft stop: in-flight requests finish), then SIGTERM, then SIGKILL, by pid."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGUSR1, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
