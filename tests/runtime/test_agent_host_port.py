"""A process replica whose commands bind the declared port itself: the agent gives it that port and
refuses a second one on the same host; placement puts one per host and port."""

from __future__ import annotations

import pytest

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.runtime.controller.model import GroupDef, ReplicaRange
from gpustack_iac.runtime.controller.placement import AgentView, Assignment, HostFacts, NoCapacity, place, reservation_for
from tests.runtime.conftest import AgentProcess, app_command, http_get, wait_until
from tests.support.ports import free_port

GiB = 1024**3


def test_the_agent_gives_the_declared_port_and_refuses_a_second_replica_on_it(shared_agent: AgentProcess) -> None:
    port = free_port()
    spec = {"id": "fixed-1", "commands": [app_command("echo.py")], "host_port": port}
    replica = shared_agent.call(lambda c: c.start(spec))
    assert replica["url"].endswith(f":{port}") and replica["host_port"] == port
    wait_until(lambda: http_get(replica["url"] + "/health")[0] == 200, what="replica serving on the declared port")
    with pytest.raises(RuntimeApiError) as caught:
        shared_agent.call(lambda c: c.start({**spec, "id": "fixed-2"}))
    assert f"port {port} is in use on this host (fixed-1)" in str(caught.value)
    shared_agent.call(lambda c: c.stop("fixed-1", grace=5))


def test_placement_puts_one_replica_per_host_and_port() -> None:
    group = GroupDef(name="g", generation="a", replicas=ReplicaRange(2, 2), commands=("serve --port 8000",), host_port=8000)
    facts = HostFacts.from_json({"name": "h", "cpus": 4, "memory_bytes": 4 * GiB, "disk_bytes": 4 * GiB})
    agents = [AgentView("a", facts), AgentView("b", facts)]
    held = reservation_for(group.resources, (), 8000)
    got = place(group, agents, {"a": [held]})
    assert isinstance(got, Assignment) and got.agent == "b" and got.reservation.host_port == 8000
    full = place(group, agents, {"a": [held], "b": [held]})
    assert isinstance(full, NoCapacity) and "port 8000 is taken by another replica on this host" in full.message()
    # Another port, or a replica using $PORT, is no conflict.
    assert isinstance(place(group, agents, {"a": [reservation_for(group.resources, (), 9000)]}), Assignment)
