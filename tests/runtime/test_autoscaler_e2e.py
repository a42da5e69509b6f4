"""The new scaling metrics end to end: the real gateway process, a real agent, real replicas.

- `metric: concurrency` scales on requests in flight at the replicas (slow requests at a low rate).
- `metric: latency` scales when the replica answers slowly (p90 time to first byte above target),
  and not while it answers fast.
"""

from __future__ import annotations

from typing import Any

from conftest import agent, agent_factory, wait_until  # noqa: F401 - fixtures
from controller_fixtures import (  # noqa: F401 - fixtures
    GatewayProcess,
    Load,
    echo_group,
    gateway_process,
    service_def,
    wait_ready,
)


def _ready(gw: GatewayProcess, service: str) -> int:
    return sum(g["ready"] for g in gw.service(service)["groups"])


def _scaled_service(name: str, scaling: dict[str, Any]) -> dict[str, Any]:
    group = echo_group("g", "g1")
    group["replicas"] = {"min": 1, "max": 3}
    definition = service_def(name, group)
    definition["scaling"] = {"scale_up_delay": 0, "scale_down_delay": 2, **scaling}
    return definition


def test_concurrency_metric_scales_on_requests_in_flight(gateway_process: GatewayProcess, agent: Any) -> None:
    gw = gateway_process
    gw.register_agent("local", agent)
    gw.put_service(_scaled_service("conc", {"metric": "concurrency", "target": 2}))
    wait_ready(gw, "conc", {"g": 1})
    # Six workers on one-second requests: about 6 in flight, 6 rps; at 2 per replica that is 3.
    with Load(gw, "/services/conc/work?delay=1", workers=6, pause=0.0) as load:
        wait_until(lambda: _ready(gw, "conc") >= 2, timeout=40, interval=0.2, what="a second replica for the in-flight load")
        load.wait_more(6)
    assert load.failures == [], load.failures[:5]
    wait_ready(gw, "conc", {"g": 1}, timeout=40)


def test_latency_metric_scales_when_the_replica_is_slow(gateway_process: GatewayProcess, agent: Any) -> None:
    gw = gateway_process
    gw.register_agent("local", agent)
    gw.put_service(_scaled_service("lat", {"metric": "latency", "target": 150}))
    wait_ready(gw, "lat", {"g": 1})
    # Fast answers (well under 150 ms at p90): one replica is enough.
    with Load(gw, "/services/lat/work", workers=2, pause=0.02) as load:
        load.wait_more(100)
        assert _ready(gw, "lat") == 1
    # The replica slows to 400 ms before its first byte: p90 above target, the service scales up.
    with Load(gw, "/services/lat/work?delay=0.4", workers=2, pause=0.0) as load:
        wait_until(lambda: _ready(gw, "lat") >= 2, timeout=40, interval=0.2, what="more replicas for a slow replica")
    assert load.failures == [], load.failures[:5]
    wait_ready(gw, "lat", {"g": 1}, timeout=40)
