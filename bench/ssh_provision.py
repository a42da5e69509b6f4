"""SSH fleet provisioning: time to install and start the agent on 1, 3 and 10 hosts, in parallel
next to one by one (the peer), on real sshd hosts in network namespaces (or on 127.0.0.x).

Each host is a fresh user with an empty home, so every install is complete: venv, wheelhouse
upload, pip install from it, agent start, facts. The wheelhouse is built once before timing
(as `up` caches it). Target: 10 hosts in parallel in at most 2x the time of one. Needs root and
openssh-server; every host is removed at the end.

    .venv/bin/python bench/ssh_provision.py [--counts 1,3,10]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpustack_iac.providers import wheelhouse  # noqa: E402
from gpustack_iac.providers.ssh import HostProvider  # noqa: E402
from tests.ssh.hosts import TestHost, TestHosts, create_hosts  # noqa: E402


def props(hosts: TestHosts, h: TestHost, cache: Path) -> dict[str, Any]:
    return {"name": f"bench-{h.name}", "hostname": h.address, "port": h.port, "user": h.user,
            "identity_file": str(hosts.client_key), "known_hosts": str(hosts.known_hosts),
            "install_dir": "~/.gpustack", "cache_dir": str(cache), "labels": {}}


def _cpu() -> float:
    """CPU seconds of this process (the machine running `up`) and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def provision(hosts: TestHosts, chosen: list[TestHost], cache: Path, parallel: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds on the `up` side) to provision `chosen`."""
    provider = HostProvider()
    cpu0 = _cpu()
    started = time.perf_counter()
    if parallel:
        with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
            results = list(pool.map(lambda h: provider.create(props(hosts, h, cache)).outs, chosen))
    else:
        results = [provider.create(props(hosts, h, cache)).outs for h in chosen]
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu0
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        list(pool.map(lambda o: provider.delete(o["name"], o), results))
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,3,10")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    hosts = create_hosts(max(counts))
    cache = Path(tempfile.mkdtemp(prefix="gsiac-bench-wheels-"))
    try:
        py, machine = wheelhouse.local_platform()
        wheelhouse.build(cache, py, machine)
        provision(hosts, hosts.hosts[:1], cache, parallel=False)  # warm-up: page cache, first imports
        print(f"hosts: {hosts.mode}, {max(counts)} sshd instances; wheelhouse built and one host provisioned before timing")
        print(f"{'hosts':>5} {'parallel s':>11} {'one by one s':>13} {'parallel / one host':>20} {'up-side CPU s':>14}")
        one = None
        for n in counts:
            chosen = hosts.hosts[:n]
            par, cpu = provision(hosts, chosen, cache, parallel=True)
            seq, _ = provision(hosts, chosen, cache, parallel=False)
            one = one if one is not None else par
            print(f"{n:>5} {par:>11.1f} {seq:>13.1f} {par / one:>19.2f}x {cpu:>14.1f}", flush=True)
        print(f"this machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; the test hosts share them, "
              "so their install work (venv, unpacking, agent start) competes here as it would not on real hosts")
    finally:
        hosts.teardown()
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
