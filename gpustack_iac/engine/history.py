"""Update history in Pulumi's DIY layout: one record per `up`, `destroy` and `refresh`.

Pulumi's DIY backend (pkg/backend/diy/state.go, addToHistory) writes, at the end of every update,

    .pulumi/history/<project>/<stack>/<stack>-<unix ns>.history.json      the UpdateInfo below
    .pulumi/history/<project>/<stack>/<stack>-<unix ns>.checkpoint.json   a copy of the checkpoint

and `pulumi stack history` lists the `.history.json` files newest first. The record's fields are
Pulumi's `backend.UpdateInfo`: kind (`update`, `destroy`, `refresh`), startTime/endTime (Unix
seconds), message, environment, config, version (the checkpoint's serial), result (`succeeded`,
`failed`) and resourceChanges (operation → count). The store (file or remote) writes the two
objects; this module only builds and reads the record.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gpustack_iac import __version__
from gpustack_iac.engine.model import Step, StepOp

# Our operation → Pulumi's UpdateKind.
KINDS = {"up": "update", "destroy": "destroy", "refresh": "refresh"}
HISTORY_SUFFIX = ".history.json"
CHECKPOINT_SUFFIX = ".checkpoint.json"


def history_dir(project: str, stack: str) -> str:
    return f".pulumi/history/{project}/{stack}/"


def entry_prefix(project: str, stack: str, stamp_ns: int) -> str:
    """The shared name of one update's two files, without suffix."""
    return f"{history_dir(project, stack)}{stack}-{stamp_ns}"


@dataclass
class UpdateRecord:
    kind: str  # Pulumi's: update, destroy, refresh
    start_time: int
    end_time: int
    result: str  # succeeded, failed
    version: int = 0
    resource_changes: dict[str, int] = field(default_factory=dict)
    message: str = ""
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "kind": self.kind, "startTime": self.start_time, "message": self.message,
            "environment": self.environment, "config": {}, "version": self.version, "result": self.result,
            "endTime": self.end_time,
        }
        if self.resource_changes:
            doc["resourceChanges"] = self.resource_changes
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def from_json(data: bytes) -> UpdateRecord:
        doc = json.loads(data)
        return UpdateRecord(
            kind=str(doc["kind"]), start_time=int(doc["startTime"]), end_time=int(doc.get("endTime") or 0),
            result=str(doc.get("result", "")), version=int(doc.get("version") or 0),
            resource_changes={str(k): int(v) for k, v in (doc.get("resourceChanges") or {}).items()},
            message=str(doc.get("message", "")), environment=dict(doc.get("environment") or {}),
        )


def resource_changes(steps: Iterable[Step]) -> dict[str, int]:
    """Pulumi's ResourceChanges: each operation on a custom resource counted (refresh reads as `same`)."""
    counts: Counter[str] = Counter()
    for step in steps:
        if not step.custom:
            continue
        op = step.op
        counts["same" if op in (StepOp.READ, StepOp.REFRESH_DRIFT) and not step.changes else
               "update" if op is StepOp.REFRESH_DRIFT else op.value] += 1
    return dict(counts)


def environment() -> dict[str, str]:
    # Pulumi's CLI records `exec.kind`; the tool's version says which writer made the record.
    return {"exec.kind": "cli", "gpustack-iac.version": __version__}
