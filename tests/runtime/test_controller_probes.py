"""Several readiness probes (dstack's `probes:` list): a replica is ready only when every one passes.

The real gateway process and a real agent; the second probe asks the echo app whether a file exists,
so the test turns it green itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import agent, agent_factory, wait_until  # noqa: F401 - fixtures
from controller_fixtures import GatewayProcess, echo_group, gateway_process, service_def  # noqa: F401 - fixtures


def _replica(gw: GatewayProcess) -> dict[str, Any] | None:
    replicas = gw.service("two-probes")["groups"][0]["replicas"]
    return replicas[0] if replicas else None


def test_a_replica_is_not_ready_until_both_probes_pass(gateway_process: GatewayProcess, agent: Any, tmp_path: Path) -> None:
    gw = gateway_process
    gw.register_agent("local", agent)
    flag = tmp_path / "warm"
    definition = service_def("two-probes", echo_group("main", "v1"))
    definition["probes"] = [
        {"url": "/health", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.3},
        {"url": f"/exists?path={flag}", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.3},
    ]
    gw.put_service(definition)
    # Probed, the first probe passing and the second failing: not ready, and the detail says which.
    seen = wait_until(lambda: (r := _replica(gw)) and "503" in str(r.get("detail")) and r,
                      timeout=60, what="the app to answer, and the second probe to be reported failing")
    assert seen["ready"] is False and "/exists" in seen["detail"] and "/health" not in seen["detail"], seen
    flag.write_text("ok")
    ready = wait_until(lambda: (r := _replica(gw)) and r["ready"] and r, timeout=60, what="the replica to be ready")
    assert "/exists" not in str(ready.get("detail"))
