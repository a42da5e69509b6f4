"""Plan-time facts of SSH fleet hosts: connect (host key verified), look, install nothing.

`plan` shows each host's CPUs, memory and GPUs and checks that every replica group fits on one
of them, before `up` installs anything. Hosts are probed in parallel; a host that cannot be
reached is reported (its facts unknown) rather than failing the plan, since a plan that removes
a dead host must still be possible.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gpustack_iac.providers import sshhost
from gpustack_iac.providers.sshconn import SshHostError, SshTarget, connect


@dataclass(frozen=True)
class ProbedHost:
    name: str
    target: SshTarget
    labels: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] | None = None  # HostFacts JSON: name, cpus, memory_bytes, disk_bytes, gpus
    error: str = ""  # why there are no facts
    problem: str = ""  # reachable, but the agent cannot be installed (no Python, no disk, ...)

    def summary(self) -> str:
        where = f"{self.name} ({self.target.label})"
        if self.facts is None:
            return f"{where}: facts unknown: {self.error}"
        gpus = self.facts.get("gpus") or []
        gpu_text = ", ".join(f"{g['name']} {g['memory_bytes'] // 2**30} GiB" for g in gpus) or "no GPUs"
        engine = "a container engine" if self.facts.get("docker") else "no container engine (image: cannot run here)"
        text = f"{where}: {self.facts['cpus']} CPUs, {self.facts['memory_bytes'] / 2**30:.1f} GiB memory, {gpu_text}, {engine}"
        return text + (f"; {self.problem}" if self.problem else "")


def _probe(name: str, target: SshTarget, labels: dict[str, Any], install_dir: str) -> ProbedHost:
    try:
        with connect(target) as conn:
            pf = sshhost.preflight(conn, target.label, sshhost.HostLayout.of(install_dir, name), check=False)
    except SshHostError as exc:
        return ProbedHost(name, target, labels, error=str(exc).removeprefix(f"host {target.label}: "))
    problem = ""
    try:
        sshhost.check_preflight(pf, target.label)
    except SshHostError as exc:
        problem = str(exc).removeprefix(f"host {target.label}: ")
    facts = {"name": name, "cpus": pf.cpus, "memory_bytes": pf.memory_mib * 2**20, "disk_bytes": pf.free_mb * 2**20,
             "gpus": [{"index": i, "name": g["name"], "vendor": "nvidia", "memory_bytes": int(g["memory_mib"]) * 2**20}
                      for i, g in enumerate(pf.gpus)],
             "docker": pf.engine}
    return ProbedHost(name, target, labels, facts=facts, problem=problem)


# RFC 5737's documentation ranges: the examples' hosts. A copied example must not make `plan` connect
# anywhere, and these addresses are nobody's host, so they are never probed.
_DOCUMENTATION_NETS = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))


def is_documentation_address(hostname: str) -> bool:
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return any(address in net for net in _DOCUMENTATION_NETS)


def _not_probed(target: SshTarget, offline: bool) -> str:
    """Why a host is not contacted at plan time, or "" when it is."""
    if offline:
        return "not probed (plan --offline)"
    jump = str((target.proxy_jump or {}).get("hostname") or "")
    for hostname in (target.hostname, jump):
        if is_documentation_address(hostname):
            return f"not probed: {hostname} is a documentation address (RFC 5737), as in the examples; put your host's address there"
    return ""


def probe_hosts(hosts: list[tuple[str, SshTarget, dict[str, Any], str]], offline: bool = False) -> list[ProbedHost]:
    """(name, target, labels, install_dir) of each host → what each one has, probed in parallel.
    Offline, or at a documentation address, a host is not contacted and its facts stay unknown."""
    if not hosts:
        return []

    def one(name: str, target: SshTarget, labels: dict[str, Any], install_dir: str) -> ProbedHost:
        why = _not_probed(target, offline)
        return ProbedHost(name, target, labels, error=why) if why else _probe(name, target, labels, install_dir)

    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return list(pool.map(lambda h: one(*h), hosts))
