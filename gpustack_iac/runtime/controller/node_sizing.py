"""Growing node groups when the joined hosts cannot hold the replicas the autoscaler wants.

Runs at the end of a reconcile tick. `NodeGroupSizer` (VM clouds) turns the groups marked "no
capacity" into demands on the fleet's node groups whose labels the group's placement accepts,
and asks the cloud for more nodes (runtime/scaling/nodegroups.py decides how many);
the new nodes' agents join by themselves (join.py) and the next ticks place the replicas.
It also shrinks them: a node of a group with `idle_duration` that has held no replica for that
long (and is above the group's minimum) is cordoned, drained (registrations.drain_agent: the
rollout rule, replacements first) and then that very instance is terminated with the group's
size lowered by one, so the cloud never picks a busy node to kill.
`DeploymentSizer` (Kubernetes) sets each replica group's Deployment to the autoscaler's count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.errors import UnknownAgentError
from gpustack_iac.runtime.controller.placement import label_mismatch
from gpustack_iac.runtime.controller.registrations import drain_agent, forget_agent
from gpustack_iac.runtime.scaling.nodegroups import (
    CloudGroupScaler,
    Demand,
    IdleNode,
    NodeGroupScaler,
    capacity_error,
    NodeGroupSpec,
    deployment_sizes,
    grow_sizes,
    idle_victims,
    short_since,
    slots_per_node,
)

log = logging.getLogger("gpustack_iac.controller.node_sizing")
# How long nodes asked of a group may take to join before the group counts as out of capacity (a
# spot group that never fills) and the next group (on-demand) grows instead: an instance boots and
# installs the runtime in a few minutes.
FALLBACK_AFTER = 600.0


class Sizer(Protocol):
    async def step(self, core: ControllerCore, now: float) -> None: ...

    async def close(self) -> None: ...


def demands(core: ControllerCore, specs: Sequence[NodeGroupSpec]) -> list[Demand]:
    """One demand per group that found no host: the replicas it is missing, and the node groups
    whose agents its placement would accept."""
    out: list[Demand] = []
    for st in core.services.values():
        for g in st.definition.groups:
            if not st.group(g.name).no_capacity or g.hosts:
                continue  # a group pinned to named hosts cannot use new nodes
            running = sum(1 for r in core.replicas.values()
                          if r.record.service == st.definition.name and r.record.group == g.name and not r.stopping)
            missing = st.desired(g.name) - running
            if missing <= 0:
                continue
            gpus = int(g.resources.gpu.count.min) if g.resources.gpu is not None else 0
            slots = {s.name: slots_per_node(s, gpus) for s in specs if label_mismatch(g.placement, s.labels) is None}
            out.append(Demand(missing, {k: v for k, v in slots.items() if v > 0}))
    return out


def joined(core: ControllerCore) -> dict[str, int]:
    """Healthy joined agents per node group."""
    counts: dict[str, int] = {}
    for a in core.agents.values():
        group = a.record.labels.get("node_group")
        if isinstance(group, str) and a.healthy:
            counts[group] = counts.get(group, 0) + 1
    return counts


class NodeGroupSizer:
    """Asks a cloud for more nodes, at most once per `interval` (instances take minutes to boot
    and join, and the decision already counts the ones on their way), and removes nodes idle for
    their group's `idle_duration`, one drained instance at a time per node."""

    def __init__(self, scaler: CloudGroupScaler, specs: Sequence[NodeGroupSpec], interval: float = 30.0,
                 fallback_after: float = FALLBACK_AFTER) -> None:
        self.scaler = scaler
        self.specs = tuple(specs)
        self.interval = interval
        self.fallback_after = fallback_after
        self._next = float("-inf")
        self._next_shrink = float("-inf")
        self._short: dict[str, float] = {}  # group -> since when its asked-for nodes have not all joined
        self._errors: dict[str, tuple[str, float]] = {}  # group -> the cloud's capacity/quota refusal, since when
        self._idle: dict[str, IdleNode] = {}  # agent -> since when it has held no replica
        self._removing: dict[str, asyncio.Task[None]] = {}  # agent -> its drain and termination
        self._removing_group: dict[str, str] = {}  # agent -> its group, while it is removed
        self.removed: list[IdleNode] = []  # terminated nodes, oldest first (status, tests)

    async def step(self, core: ControllerCore, now: float) -> None:
        self._track_idle(core, now)
        wanted = demands(core, self.specs)
        if wanted and now >= self._next:
            await self._grow(core, wanted, now)
        _show_capacity(core, self._errors)
        # A group that could host waiting replicas keeps its idle nodes (they are about to be used).
        busy = frozenset(name for d in wanted for name in d.slots)
        await self._shrink(core, now, busy)

    async def _grow(self, core: ControllerCore, wanted: list[Demand], now: float) -> None:
        self._next = now + self.interval
        sizes = {s.name: await self.scaler.get_size(s.name) for s in self.specs}
        have = joined(core)
        self._short = short_since(self._short, sizes, have, now)
        await self._read_launch_errors(sizes, have, now)
        stalled = frozenset(n for n, since in self._short.items() if now - since >= self.fallback_after)
        for name in sorted(stalled):
            log.warning("node group %s: %d of %d nodes joined after %.0f s; growing the next group instead",
                        name, have.get(name, 0), sizes[name], now - self._short[name])
        # A refusal for capacity or quota moves the demand on at once (the next zone's, region's
        # or on-demand group), for `fallback_after`; then the group is tried again.
        self._errors = {g: e for g, e in self._errors.items() if now - e[1] < self.fallback_after}
        for _ in self.specs:  # each refusal stalls one more group; then the decision is made again
            refused = await self._apply(grow_sizes(self.specs, sizes, have, wanted, stalled | frozenset(self._errors)),
                                        sizes, wanted, now)
            if not refused:
                break

    async def _apply(self, changes: dict[str, int], sizes: dict[str, int], wanted: list[Demand], now: float) -> bool:
        """Ask for the new sizes; True when the cloud refused one for capacity or quota."""
        for name, size in changes.items():
            log.info("node group %s: %d -> %d nodes (%d replicas without a host)",
                     name, sizes[name], size, sum(d.replicas for d in wanted))
            try:
                await self.scaler.set_size(name, size)
            except GpustackError as exc:
                reason = capacity_error(str(exc))
                if reason is None:
                    raise
                self._refused(name, reason, now)
                return True
            sizes[name] = size
            # The bound runs from the group's first request still unfilled.
            self._short.setdefault(name, now)
        return False

    async def _read_launch_errors(self, sizes: Mapping[str, int], have: Mapping[str, int], now: float) -> None:
        """Launches that failed since the last look, for the groups still waiting for nodes."""
        for s in self.specs:
            if sizes[s.name] <= have.get(s.name, 0):
                continue
            try:
                messages = await self.scaler.launch_errors(s.name)
            except GpustackError as exc:  # not knowing why nodes are late must not stop growth
                log.warning("node group %s: %s", s.name, exc)
                continue
            for message in messages:
                reason = capacity_error(message)
                if reason is not None:
                    self._refused(s.name, reason, now)

    def _refused(self, name: str, reason: str, now: float) -> None:
        log.warning("node group %s: the cloud refused nodes (%s); growing the next group instead", name, reason)
        self._errors[name] = (reason, now)

    def _track_idle(self, core: ControllerCore, now: float) -> None:
        """Since when each healthy, uncordoned node of a group with `idle_duration` has held no replica."""
        groups = {s.name for s in self.specs if s.idle_duration is not None}
        hosting = {r.record.agent for r in core.replicas.values()}
        idle: dict[str, IdleNode] = {}
        for name, a in core.agents.items():
            group = a.record.labels.get("node_group")
            if (isinstance(group, str) and group in groups and a.healthy and name not in hosting
                    and name not in core.draining and name not in self._removing):
                idle[name] = self._idle.get(name) or IdleNode(name, group, now)
        self._idle = idle

    async def _shrink(self, core: ControllerCore, now: float, busy: frozenset[str]) -> None:
        due = [n for n in self._idle.values() if any(
            s.name == n.group and s.idle_duration is not None and now - n.since >= s.idle_duration for s in self.specs)]
        if not due or now < self._next_shrink:
            return
        self._next_shrink = now + self.interval
        groups = {n.group for n in due}
        # The minimum is kept in joined nodes (ones asked for that never came do not count), and
        # nodes already on their way out no longer count.
        have = joined(core)
        leaving = [self._removing_group[a] for a in self._removing]
        sizes = {g: min(await self.scaler.get_size(g), have.get(g, 0)) - leaving.count(g) for g in sorted(groups)}
        for node in idle_victims(self.specs, sizes, due, now, busy):
            log.info("node group %s: node %s idle for %.0f s; draining and terminating it",
                     node.group, node.agent, now - node.since)
            self._idle.pop(node.agent, None)
            core.draining.add(node.agent)  # cordoned now, within this tick: nothing more is placed there
            self._removing_group[node.agent] = node.group
            self._removing[node.agent] = asyncio.create_task(self._remove(core, node))

    async def _remove(self, core: ControllerCore, node: IdleNode) -> None:
        try:
            await drain_agent(core, node.agent)
            # The agent's name is its instance's id (the boot script names it so).
            size = await self.scaler.remove_node(node.group, node.agent)
            await forget_agent(core, node.agent)
            self.removed.append(node)
            log.info("node group %s: node %s terminated; %d nodes", node.group, node.agent, size)
        except (GpustackError, UnknownAgentError) as exc:
            # Left cordoned until it is gone or joins again: a later tick retries.
            log.warning("node group %s: cannot remove node %s: %s", node.group, node.agent, exc)
            core.draining.discard(node.agent)
        finally:
            self._removing.pop(node.agent, None)
            self._removing_group.pop(node.agent, None)

    async def settle(self) -> None:
        """Wait for the removals in progress (tests)."""
        if self._removing:
            await asyncio.gather(*self._removing.values(), return_exceptions=True)

    async def close(self) -> None:
        """The controller stops: removals in progress end where they are (a node drained but not
        terminated joins again and is idle again; one terminated but not forgotten is found lost)."""
        for task in list(self._removing.values()):
            task.cancel()
        await asyncio.gather(*self._removing.values(), return_exceptions=True)
        await self.scaler.close()


def _show_capacity(core: ControllerCore, errors: Mapping[str, tuple[str, float]]) -> None:
    """The refusals in the status of every replica group that waits for a host."""
    note = "; ".join(f"node group {g}: {reason}" for g, (reason, _) in sorted(errors.items())) or None
    for st in core.services.values():
        for gs in st.groups.values():
            gs.capacity = note if gs.no_capacity else None


class DeploymentSizer:
    """Kubernetes: keeps each replica group's Deployment at the autoscaler's count."""

    def __init__(self, scaler: NodeGroupScaler, deployments: Mapping[tuple[str, str], str]) -> None:
        self.scaler = scaler
        self.deployments = dict(deployments)  # (service, group) -> Deployment name
        self._set: dict[str, int | None] = {}

    async def step(self, core: ControllerCore, now: float) -> None:
        wanted: dict[str, int] = {}
        for (service, group), name in self.deployments.items():
            st = core.services.get(service)
            desired = st.group(group).desired if st is not None else None
            if desired is not None:
                wanted[name] = desired
        for name, size in deployment_sizes(wanted, self._set).items():
            self._set[name] = None  # asked again next tick if this call fails
            await self.scaler.set_size(name, size)
            self._set[name] = size
            log.info("deployment %s scaled to %d", name, size)

    async def close(self) -> None:
        await self.scaler.close()


async def run_sizers(core: ControllerCore, sizers: Sequence[Sizer], now: float) -> None:
    for sizer in sizers:
        try:
            await sizer.step(core, now)
        except GpustackError as exc:
            # A cloud API outage must not stall the tick; the next one asks again.
            log.warning("node group sizing: %s", exc)
