"""`python -m gpustack_iac.runtime.devenv`: a dev environment's process group.

Runs the `init` commands, then an sshd on the agent-given port that accepts the user's public
key, and exits 0 once no SSH session has been open for `--inactivity` seconds (the agent does not
restart a replica with restart policy on-failure that exits 0). The public key and the init
commands arrive in GPUSTACK_DEVENV_AUTHORIZED_KEYS and GPUSTACK_DEVENV_INIT (a JSON list).
A line starting with READY_MARKER tells whoever started it the address and host key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from gpustack_iac.runtime.devenv import READY_MARKER
from gpustack_iac.runtime.devenv.idle import IdleClock
from gpustack_iac.runtime.devenv.sshd import SSHD, host_key, write_config

_OWN_ENV = ("GPUSTACK_DEVENV_AUTHORIZED_KEYS", "GPUSTACK_DEVENV_INIT")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gpustack_iac.runtime.devenv")
    parser.add_argument("--dir", type=Path, required=True, help="where the host key and sshd configuration live")
    parser.add_argument("--port", type=int, required=True, help="the port sshd listens on")
    parser.add_argument("--listen", default="127.0.0.1", help="the address sshd listens on")
    parser.add_argument("--inactivity", type=float, default=0.0, help="stop after this many seconds without a session; 0: never")
    parser.add_argument("--status-file", type=Path, help="write {state, sessions, last_session_at} here")
    parser.add_argument("--remove-dir", action="store_true",
                        help="remove --dir once stopped (on an SSH fleet host, where nothing may stay behind)")
    return parser.parse_args(argv)


def _say(line: str) -> None:
    print(f"[devenv {time.strftime('%H:%M:%S')}] {line}", flush=True)


def _write_status(path: Path | None, **data: Any) -> None:
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**data, "updated_at": time.time()}))
    os.replace(tmp, path)


def _session_env() -> dict[str, str]:
    """What an SSH session should see: the run's own variables, not the agent's plumbing."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("GPUSTACK_MOUNT_") or k in os.environ.get("GPUSTACK_DEVENV_ENV_NAMES", "").split(",")}
    return keep


def main(args: argparse.Namespace) -> int:
    args.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(args.dir, 0o700)
    keys = os.environ.get("GPUSTACK_DEVENV_AUTHORIZED_KEYS", "")
    init = json.loads(os.environ.get("GPUSTACK_DEVENV_INIT", "[]") or "[]")
    env = {k: v for k, v in os.environ.items() if k not in _OWN_ENV}
    if init:
        _say(f"running {len(init)} init command(s)")
        _write_status(args.status_file, state="initializing", sessions=0, last_session_at=None)
        done = subprocess.run(["/bin/sh", "-c", " && ".join(init)], env=env, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            _say(f"init failed with code {done.returncode}")
            _write_status(args.status_file, state="failed", reason=f"init exited {done.returncode}", sessions=0, last_session_at=None)
            return done.returncode
    public = host_key(args.dir)
    config = write_config(args.dir, args.port, args.listen, keys, _session_env())
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL)
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    # sshd is ready when it listens; then say so (the starter waits for this line).
    deadline = time.monotonic() + 30
    while not any(c.laddr and c.laddr.port == args.port and c.status == psutil.CONN_LISTEN
                  for c in psutil.Process(sshd.pid).net_connections("tcp")):
        if sshd.poll() is not None or time.monotonic() > deadline:
            _say("sshd did not start")
            return sshd.returncode or 1
        time.sleep(0.1)
    _say(f"{READY_MARKER} {args.listen} {args.port} {public}")
    clock = IdleClock(args.inactivity, ready_at=time.time())
    reason = ""
    while not stop:
        if sshd.poll() is not None:
            _say(f"sshd exited with code {sshd.returncode}")
            return sshd.returncode or 1
        try:
            sessions = len(psutil.Process(sshd.pid).children())
        except psutil.NoSuchProcess:
            sessions = 0
        reason = clock.observe(sessions, time.time()) or ""
        _write_status(args.status_file, state="running", sessions=sessions, last_session_at=clock.last_session_at or clock.ready_at)
        if reason:
            break
        time.sleep(0.5)
    _say(f"stopping: {reason or 'asked to stop'}")
    sshd.terminate()
    try:
        sshd.wait(10)
    except subprocess.TimeoutExpired:
        sshd.kill()
    _write_status(args.status_file, state="stopped", reason=reason or "stopped", sessions=0, last_session_at=clock.last_session_at or clock.ready_at)
    if args.remove_dir:
        shutil.rmtree(args.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            args.dir.parent.rmdir()  # the shared parent goes with its last dev environment
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
