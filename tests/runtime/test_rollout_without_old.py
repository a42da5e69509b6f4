"""A rollout whose old version has no live replica left at the PUT must still end.

Found by the private-registry container test on an idle machine: `up` with a wrong registry password
fails, its replicas fail their pulls and are being stopped; the corrected `up` arrives while they
are, so the rollout report reads "running" from the PUT on, while the surge-and-drain steps never see
an old replica to drain. Both new replicas got ready within a second, and `up` waited 200 s for a
rollout that no tick would ever finish."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.live import ReplicaState, ServiceState
from gpustack_iac.runtime.controller.model import GroupDef, ReplicaRange, ServiceDef
from gpustack_iac.runtime.controller.registrations import put_service
from gpustack_iac.runtime.controller.rollout import ReplicaView, RolloutReport, plan_group
from gpustack_iac.runtime.controller.service_reconcile import _reconcile_group
from gpustack_iac.runtime.controller.store import PlacementRecord, Store
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.routing import RoutingTable


def _service(generation: str) -> ServiceDef:
    return ServiceDef(name="web", generation=f"s-{generation}",
                      groups=(GroupDef(name="main", generation=generation, replicas=ReplicaRange(2, 2)),))


def _replica(generation: str, index: int, *, ready: bool = False, stopping: bool = False) -> ReplicaState:
    record = PlacementRecord(f"web-main-{generation}-{index}", "web", "main", generation, "host-1", (), 0.0)
    return ReplicaState(record=record, ready=ready, stopping=stopping, failed=stopping)


def test_a_rollout_put_while_the_old_replicas_are_stopping_ends_when_the_new_ones_are_ready(tmp_path: Path) -> None:
    async def scenario() -> ServiceState:
        core = ControllerCore(Store(tmp_path / "state.db"), RoutingTable(), Metrics())
        core.services["web"] = ServiceState(definition=_service("g1"))
        for i in (1, 2):  # the wrong-password version: failed pulls, being stopped
            old = _replica("g1", i, stopping=True)
            core.replicas[old.id] = old
        await put_service(core, _service("g2"))
        st = core.services["web"]
        at_put = st.group("main").rollout
        assert at_put is not None and at_put.state == "running"
        for i in (1, 2):  # the corrected version's replicas, started and ready
            new = _replica("g2", i, ready=True)
            core.replicas[new.id] = new
        st.group("main").desired = 2
        await _reconcile_group(core, st, st.definition.groups[0], now=5.0)
        return st

    rollout = asyncio.run(scenario()).group("main").rollout
    assert rollout is not None
    assert (rollout.state, rollout.updated, rollout.desired) == ("done", 2, 2), rollout


def test_the_report_follows_the_new_version_until_it_is_ready() -> None:
    running = RolloutReport("main", "g1", "g2", "running", 0, 2, "rolling out g2")
    one = plan_group("main", "g2", 2, [ReplicaView("n1", "g2", True, False, 1.0), ReplicaView("n2", "g2", False, False, 1.0)],
                     now=2.0, deadline=60.0, rollout=running)
    assert one.rollout is not None and (one.rollout.state, one.rollout.updated) == ("running", 1)
    both = plan_group("main", "g2", 2, [ReplicaView("n1", "g2", True, False, 1.0), ReplicaView("n2", "g2", True, False, 1.0)],
                      now=3.0, deadline=60.0, rollout=running)
    assert both.rollout is not None and both.rollout.state == "done"
    # A finished or unrelated report is left as it is.
    done = RolloutReport("main", "g1", "g2", "done", 2, 2, "2/2 replicas updated to g2")
    assert plan_group("main", "g2", 2, [], now=4.0, deadline=60.0, rollout=done).rollout is None
