"""Recovery from `kill -9` of the gateway and of an agent under load, on `examples/local`.

Deploys examples/local with the real CLI in a temporary directory, sends a bounded open-loop load
(loopback only) at the service, kills one process 2 s in, and prints how long until the process
was restarted and serving again, and how many requests failed. Peer, in the same run: the gateway
killed together with its watchdog (what an unsupervised gateway's death looked like), recovered by
running `gpustack-iac up` at once — the best a person can do by hand.

    .venv/bin/python bench/recovery.py [--rate 100] [--seconds 6]

Everything it started is destroyed (and killed by pid) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpustack_iac.runtime.watchdog import live_pid  # noqa: E402
from tests.support.loadgen import LoadGenerator  # noqa: E402


@dataclass
class Stack:
    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "GPUSTACK_STATE_DIR": str(self.root / ".gpustack" / "state"), "GPUSTACK_PASSPHRASE": "bench-recovery"}

    def cli(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "gpustack_iac", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"gpustack-iac {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def daemon_dir(self, kind: str) -> Path:
        pattern = "gateways/*/gateway.pid.json" if kind == "gateway" else "hosts/*/agent.pid.json"
        return sorted(self.root.rglob(pattern))[0].parent


def get(url: str, token: str, timeout: float = 5.0) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_for(predicate: Callable[[], object], timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.01)
    return time.time()


def scenario(stack: Stack, kind: str, with_up: bool, rate: float, seconds: float) -> str:
    outputs = json.loads(stack.cli("output", "--json", "--show-secrets"))
    url, token = outputs["endpoint"] + "/", outputs["token"]
    wait_for(lambda: get(url, token) == 200)
    daemon_dir = stack.daemon_dir(kind)
    child = live_pid(daemon_dir / f"{kind}.pid.json")
    watchdog = live_pid(daemon_dir / f"{kind}.watchdog.json")
    assert child and watchdog
    load = LoadGenerator(url, token, rate=rate, duration=seconds, max_requests=int(rate * seconds) + 10).start()
    wait_for(lambda: load.elapsed() >= 2.0)
    killed = time.time()
    if with_up:
        os.kill(watchdog[0], signal.SIGKILL)
    os.kill(child[0], signal.SIGKILL)
    if with_up:
        stack.cli("up", "local", "--yes")
    # Serving again: the port file names a live new process, and a fresh request through it succeeds.
    wait_for(lambda: (p := live_pid(daemon_dir / f"{kind}.pid.json")) is not None and p[0] != child[0])
    if kind == "gateway":
        recovered = wait_for(lambda: get(url, token) == 200)
    else:
        agent_port = json.loads((daemon_dir / "agent.port.json").read_text())["port"]
        recovered = wait_for(lambda: get(f"http://127.0.0.1:{agent_port}/v1/health", "") in (200, 401))
    result = load.wait()
    how = "killed with its watchdog, then `up`" if with_up else "kill -9, supervised"
    return (f"{kind:8} {how:36} back after {recovered - killed:5.2f} s   "
            f"failed {len(result.failures):4d} of {len(result.outcomes):5d} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpustack-recovery-"))
    shutil.copytree(REPO / "examples" / "local", root / "local")
    stack = Stack(root)
    try:
        stack.cli("up", "local", "--yes")
        print(f"examples/local, open-loop load {args.rate:.0f} req/s for {args.seconds:.0f} s, kill at 2 s")
        print(scenario(stack, "gateway", False, args.rate, args.seconds))
        print(scenario(stack, "agent", False, args.rate, args.seconds))
        print(scenario(stack, "gateway", True, args.rate, args.seconds))
    finally:
        subprocess.run([sys.executable, "-m", "gpustack_iac", "destroy", "--yes"], cwd=root, env=stack.env,
                       capture_output=True, timeout=300, check=False)
        marker = str(root)
        leftovers = [p for p in psutil.process_iter(["cmdline", "cwd"])
                     if marker in " ".join(p.info["cmdline"] or []) or (p.info["cwd"] or "").startswith(marker)]
        for proc in leftovers:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
