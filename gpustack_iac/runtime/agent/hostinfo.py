"""Facts about the host an agent runs on: CPUs, memory, disk, GPUs (nvidia-smi) and Docker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from gpustack_iac.runtime.agent import engine

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    vendor: str
    memory_bytes: int


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`.

    Memory is reported in MiB. Lines that do not parse (driver warnings, "[N/A]") are skipped
    rather than failing the whole host report.
    """
    gpus: list[Gpu] = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue
        # A GPU name could in principle contain a comma: index is first, memory last.
        index_text, memory_text, name = parts[0], parts[-1], ", ".join(parts[1:-1])
        try:
            index = int(index_text)
            memory_mib = float(memory_text)
        except ValueError:
            continue
        if not name:
            continue
        gpus.append(Gpu(index=index, name=name, vendor="nvidia", memory_bytes=int(memory_mib * _MIB)))
    return gpus


def detect_gpus(timeout: float = 15.0) -> list[Gpu]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        result = subprocess.run([exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return parse_nvidia_smi(result.stdout)


def detect_docker(timeout: float = 10.0) -> bool:
    """True only when a container engine answers (`docker info`, or Podman's remote client at
    DOCKER_HOST), not merely when a client exists."""
    client = engine.client_argv(os.environ)
    if shutil.which(client[0]) is None:
        return False
    try:
        result = subprocess.run([*client, "info", "--format", "{{.ServerVersion}}"] if client[0].endswith("docker")
                                else [*client, "info"], capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class StaticFacts:
    """What does not change while the agent runs, gathered once at start (nvidia-smi is slow)."""

    name: str
    gpus: tuple[Gpu, ...]
    docker: bool

    @classmethod
    def gather(cls, name: str | None) -> "StaticFacts":
        return cls(name=name or socket.gethostname(), gpus=tuple(detect_gpus()), docker=detect_docker())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def host_report(facts: StaticFacts, disk_path: Path) -> dict[str, Any]:
    mem = psutil.virtual_memory()
    disk = shutil.disk_usage(disk_path)
    return {
        "name": facts.name,
        "cpus": cpu_count(),
        "memory_bytes": mem.total,
        "memory_available_bytes": mem.available,
        "disk_bytes": disk.total,
        "disk_free_bytes": disk.free,
        "gpus": [asdict(g) for g in facts.gpus],
        "docker": facts.docker,
        # A port free on this host now: a multi-node task's MASTER_PORT when rank 0 is here
        # (this machine's free ports say nothing about another host's).
        "free_port": free_port(),
    }
