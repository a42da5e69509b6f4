"""Clean-up of an agent's replicas without the agent: for `destroy` and for tests.

Stopping the agent (SIGTERM) deliberately leaves its replicas running, so whoever removes a
host for good calls this afterwards to stop every replica the agent recorded.
"""

from __future__ import annotations

from pathlib import Path

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.agent import pgroup
from gpustack_iac.runtime.agent.store import Store


def stop_all_replicas(state_dir: Path, grace: float = 10.0) -> list[str]:
    """Stop (SIGTERM, grace, SIGKILL, whole process group) every replica recorded under
    `state_dir` and forget it; returns the replica ids. Run it only once the agent is stopped,
    or the agent restarts what this stops."""
    store = Store(state_dir)
    key = str(state_dir.resolve())
    records, _problems = store.load_all()
    for record in records:
        if record.pid is not None:
            procs.stop_process(record.pid, record.create_time, grace=grace, group=True)
        # Catches what the record missed: children that left the group, an unrecorded pid.
        pgroup.kill_replica_orphans(record.spec.id, key)
        store.delete(record.spec.id)
    return [r.spec.id for r in records]
