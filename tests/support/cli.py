"""The real CLI in a subprocess, as the end-to-end tests drive it.

A CLI that does not return in time is not just killed: it gets SIGABRT first, and with
PYTHONFAULTHANDLER set, Python writes every thread's stack to stderr before it dies, so a hang
(seen only in full runs, never alone) fails with where it was waiting instead of a bare timeout.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

# After SIGABRT: time for faulthandler to write the stacks, then SIGKILL.
DUMP_GRACE_S = 10


class CliHung(AssertionError):
    """The CLI ran past its timeout; the message carries its output and thread stacks."""


def run_cli(args: tuple[str, ...], cwd: Path, env: dict[str, str], check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gpustack_iac", *args]
    with subprocess.Popen(argv, cwd=cwd, env={**env, "PYTHONFAULTHANDLER": "1"}, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=DUMP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise CliHung(f"gpustack-iac {' '.join(args)} did not return in {timeout:g} s; stacks at SIGABRT:\n"
                          f"stdout:\n{out[-4000:]}\nstderr:\n{err[-20000:]}") from None
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and done.returncode != 0:
        raise AssertionError(f"gpustack-iac {' '.join(args)} exited {done.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    return done
