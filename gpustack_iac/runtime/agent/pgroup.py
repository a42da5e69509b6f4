"""Process-group plumbing for replicas: non-reaping exit checks, group kills, orphan discovery."""

from __future__ import annotations

import os
import signal

import psutil

# Marks every replica process with the agent that owns it, so that orphans can be found
# again (by environment) even when the agent died before it recorded their pid.
REPLICA_ENV = "GPUSTACK_REPLICA_ID"
AGENT_ENV = "GPUSTACK_AGENT_STATE_DIR"


def child_exited(pid: int) -> bool:
    """True once our child `pid` has exited, *without* reaping it.

    Leaving the zombie in place keeps its pid (and so its process-group id) reserved until the
    group's stragglers are killed: the kill cannot hit an unrelated process that reused the id.
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_has_members(pgid: int) -> bool:
    """Whether any live process still belongs to process group `pgid`."""
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied, PermissionError):
            continue
    return False


def find_replica_processes(replica_id: str, state_dir: str) -> list[psutil.Process]:
    """Live processes started for `replica_id` by the agent whose state lives in `state_dir`."""
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get(REPLICA_ENV) == replica_id and env.get(AGENT_ENV) == state_dir and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def kill_replica_orphans(replica_id: str, state_dir: str) -> int:
    """SIGKILL every live process of `replica_id` (and its group); returns how many were found."""
    procs = find_replica_processes(replica_id, state_dir)
    for proc in procs:
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            continue
        # Replicas run in their own groups; never signal the agent's own group.
        if pgid != os.getpgrp():
            kill_group(pgid)
        else:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
    psutil.wait_procs(procs, timeout=5)
    return len(procs)
