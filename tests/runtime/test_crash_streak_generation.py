"""Only the generation a group heads to makes a crash loop: an `up` that corrects a crashing
version (a wrong registry password) must not fail on the old version's last crashes."""

from __future__ import annotations

from pathlib import Path

from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.live import AgentState, GroupState, ReplicaState
from gpustack_iac.runtime.controller.model import GroupDef, ReplicaRange
from gpustack_iac.runtime.controller.service_reconcile import _account_stop
from gpustack_iac.runtime.controller.store import AgentRecord, PlacementRecord, Store
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.routing import RoutingTable


def _crashed(generation: str, index: int) -> ReplicaState:
    record = PlacementRecord(f"web-main-{generation}-{index}", "web", "main", generation, "host-1", (), 0.0)
    return ReplicaState(record=record, failed=True, detail="exited with 125")


def test_crashes_of_a_replaced_version_do_not_make_a_crash_loop_of_the_new_one(tmp_path: Path) -> None:
    core = ControllerCore(Store(tmp_path / "state.db"), RoutingTable(), Metrics())
    core.agents["host-1"] = AgentState(record=AgentRecord("host-1", "http://127.0.0.1:1", "t", {}), healthy=True)
    group = GroupDef(name="main", generation="g2", replicas=ReplicaRange(1, 1))
    gs = GroupState()
    for i in range(3):  # the wrong-password version keeps failing after the corrected PUT
        _account_stop(core, gs, group, _crashed("g1", i), rolling=True, now=10.0 + i, target="g2")
    assert gs.crash_streak == 0 and gs.backoff_until == 0.0
    assert gs.message is not None and "replaced version" in gs.message

    _account_stop(core, gs, group, _crashed("g2", 9), rolling=True, now=20.0, target="g2")
    assert gs.crash_streak == 1 and gs.backoff_until > 20.0 and gs.new_failures == 1
