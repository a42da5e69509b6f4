"""The task runner's status file and per-node logs, under the runner's state directory.

`status` and `logs` read these files; the runner is the only writer (atomic replace).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
FINAL_STATES = ("succeeded", "failed", "stopped")


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    path = state_dir / STATUS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def node_log(state_dir: Path, rank: int) -> Path:
    return state_dir / "logs" / f"node-{rank}.log"
