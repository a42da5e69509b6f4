"""Volumes for a replica: a bind mount in container mode; in process mode an environment variable
with the directory's path and, where it can be created, a symbolic link at the mount path.

The rules are documented for users in docs/workloads.md ("Volumes in process mode").
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from gpustack_iac.runtime.agent.spec import Mount, ReplicaSpec


def env_name(mount: Mount) -> str:
    """`/data` → GPUSTACK_MOUNT_DATA, `/root/.cache/hf` → GPUSTACK_MOUNT_ROOT_CACHE_HF."""
    return "GPUSTACK_MOUNT_" + (re.sub(r"[^A-Za-z0-9]+", "_", mount.target).strip("_").upper() or "ROOT")


def mount_env(spec: ReplicaSpec, container: bool) -> dict[str, str]:
    """The variables a replica gets: the path it should use for each mount."""
    return {env_name(m): (m.target if container else m.source) for m in spec.mounts}


def docker_args(spec: ReplicaSpec) -> list[str]:
    out: list[str] = []
    for m in spec.mounts:
        out += ["-v", f"{m.source}:{m.target}"]
    return out


def prepare(spec: ReplicaSpec, container: bool) -> list[str]:
    """Create every source directory and, in process mode, the links; one log line per link not made."""
    notes: list[str] = []
    for m in spec.mounts:
        Path(m.source).mkdir(parents=True, exist_ok=True)
        if container:
            continue
        target = Path(m.target)
        if target.is_symlink() and os.readlink(target) == m.source:
            continue
        if target.exists() or target.is_symlink():
            notes.append(f"mount {m.target}: exists on this host, not linked; use ${env_name(m)} ({m.source})")
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(m.source, target_is_directory=True)
        except OSError as exc:
            notes.append(f"mount {m.target}: cannot link ({exc.strerror}); use ${env_name(m)} ({m.source})")
    return notes


def release(spec: ReplicaSpec) -> None:
    """Remove the links this replica's mounts made (only links that still point at its directories)."""
    for m in spec.mounts:
        target = Path(m.target)
        with contextlib.suppress(OSError):
            if target.is_symlink() and os.readlink(target) == m.source:
                target.unlink()
