"""On-disk record of every replica an agent runs: one JSON file per replica, written atomically.

A restarted agent reads these records to re-adopt live replicas instead of starting duplicates.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpustack_iac.errors import ReplicaSpecError
from gpustack_iac.runtime.agent.spec import ReplicaSpec, parse_replica_spec

RECORD_VERSION = 1


@dataclass
class ReplicaRecord:
    spec: ReplicaSpec
    port: int
    pid: int | None = None
    create_time: float | None = None  # psutil create_time of pid: tells a live replica from a reused pid
    restarts: int = 0
    started_at: float = 0.0
    state: str = "starting"
    exit_code: int | None = None
    container: bool = False
    stopping: bool = False  # a DELETE began; a restarted agent finishes it instead of re-adopting
    finished_at: float | None = None  # when a run-once replica (restart never / on-failure) ended for good
    error: str | None = None  # why it cannot run at all (an image that cannot be pulled): not restarted

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "spec": self.spec.to_json(secrets=True),
            "port": self.port,
            "pid": self.pid,
            "create_time": self.create_time,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "state": self.state,
            "exit_code": self.exit_code,
            "container": self.container,
            "stopping": self.stopping,
            "finished_at": self.finished_at,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ReplicaRecord":
        return cls(
            spec=parse_replica_spec(data["spec"]),
            port=int(data["port"]),
            pid=int(data["pid"]) if data.get("pid") is not None else None,
            create_time=float(data["create_time"]) if data.get("create_time") is not None else None,
            restarts=int(data.get("restarts", 0)),
            started_at=float(data.get("started_at", 0.0)),
            state=str(data.get("state", "starting")),
            exit_code=int(data["exit_code"]) if data.get("exit_code") is not None else None,
            container=bool(data.get("container", False)),
            stopping=bool(data.get("stopping", False)),
            finished_at=float(data["finished_at"]) if data.get("finished_at") is not None else None,
            error=str(data["error"]) if data.get("error") is not None else None,
        )


class Store:
    """Replica records under `<state_dir>/replicas/`, logs under `<state_dir>/logs/`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.records_dir = state_dir / "replicas"
        self.logs_dir = state_dir / "logs"
        # Records hold replica environments and logs hold replica output: both may carry secrets.
        for path in (state_dir, self.records_dir, self.logs_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)

    def _path(self, replica_id: str) -> Path:
        return self.records_dir / f"{replica_id}.json"

    def log_path(self, replica_id: str) -> Path:
        return self.logs_dir / f"{replica_id}.log"

    def save(self, record: ReplicaRecord) -> None:
        path = self._path(record.spec.id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps(record.to_json(), sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            # fsync so that a machine crash never leaves a truncated record behind the rename.
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def delete(self, replica_id: str) -> None:
        self._path(replica_id).unlink(missing_ok=True)

    def load_all(self) -> tuple[list[ReplicaRecord], list[str]]:
        """Every readable record, and a message for each file that could not be read."""
        records: list[ReplicaRecord] = []
        problems: list[str] = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                records.append(ReplicaRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError, ReplicaSpecError) as exc:
                problems.append(f"{path}: {exc}")
        return records, problems
