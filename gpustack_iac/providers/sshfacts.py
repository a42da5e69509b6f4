"""Plan-time facts of SSH fleet hosts: connect (host key verified), look, install nothing.

`plan` shows each host's CPUs, memory and GPUs and checks that every replica group fits on one
of them, before `up` installs anything. Hosts are probed in parallel; a host that cannot be
reached is reported (its facts unknown) rather than failing the plan, since a plan that removes
a dead host must still be possible.
"""

from __future__ import annotations

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
        text = f"{where}: {self.facts['cpus']} CPUs, {self.facts['memory_bytes'] / 2**30:.1f} GiB memory, {gpu_text}"
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
                      for i, g in enumerate(pf.gpus)]}
    return ProbedHost(name, target, labels, facts=facts, problem=problem)


def probe_hosts(hosts: list[tuple[str, SshTarget, dict[str, Any], str]]) -> list[ProbedHost]:
    """(name, target, labels, install_dir) of each host → what each one has, probed in parallel."""
    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return list(pool.map(lambda h: _probe(*h), hosts))
