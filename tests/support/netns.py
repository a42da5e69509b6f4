"""Network-namespace hosts on a bridge, for the tests that need a machine of their own: the SSH
fleets' sshd hosts (tests/ssh/hosts.py) and the boot rehearsal's cloud "instances"
(tests/cloud/rehearsal/netns.py). Addresses come from 198.18.0.0/15; the bridge holds `.1`.

Everything made here is removed by name and every process killed by pid (`kill_all`, `remove`),
also after a failure: the callers call them from their teardown.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from typing import Iterable

import psutil


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _subnet_in_use(prefix: str) -> bool:
    out = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    return f" {prefix}." in out


def free_prefix(first: str) -> str:
    """An unused `/24` under `first` ("198.18" or "198.19"): its first three octets."""
    third = random.randint(1, 254)
    while _subnet_in_use(f"{first}.{third}"):
        third = random.randint(1, 254)
    return f"{first}.{third}"


def add_bridge(name: str, prefix: str) -> None:
    """A bridge in the root namespace holding `<prefix>.1/24`, where test servers listen."""
    run("ip", "link", "add", name, "type", "bridge")
    run("ip", "addr", "add", f"{prefix}.1/24", "dev", name)
    run("ip", "link", "set", name, "up")


def add_namespace(netns: str, bridge: str, outer: str, inner: str, address: str) -> None:
    """A namespace joined to `bridge` by a veth pair, with `address/24` and loopback up."""
    run("ip", "netns", "add", netns)
    run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
    run("ip", "link", "set", inner, "netns", netns)
    run("ip", "link", "set", outer, "master", bridge, "up")
    run("ip", "-n", netns, "link", "set", "lo", "up")
    run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", inner)
    run("ip", "-n", netns, "link", "set", inner, "up")


def namespace_pids(netns: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()} - {os.getpid()}


def kill_all(pids: Iterable[int], timeout: float = 30) -> None:
    """Kill each process by pid and wait until it is gone (or a zombie nobody here reaps)."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.kill()
            procs.append(p)
        except psutil.NoSuchProcess:
            pass
    # A detached daemon's parent may be gone: then it is nobody's child here, and a zombie is gone enough.
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        procs = [p for p in procs if _alive(p)]
        time.sleep(0.1)


def _alive(p: psutil.Process) -> bool:
    try:
        p.wait(timeout=0)  # reaps it when it is our child
        return False
    except psutil.TimeoutExpired:
        pass
    except psutil.NoSuchProcess:
        return False
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def remove(namespaces: Iterable[str], bridge: str | None) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if bridge:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
