"""End to end on three real sshd hosts: an SSH fleet, a gateway on this machine, a service in two replica groups.

One test walks the whole life of a stack, because provisioning three hosts is the expensive part:
up, traffic through the gateway, a host removed under load (no failed request), a host lost
(agent, replicas and sshd killed: its replicas re-placed within 30 s), destroy (no process and no
installed file left on any host).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import pytest

from tests.e2e.conftest import EXAMPLES, http, wait_until
from tests.ssh.hosts import TestHosts
from tests.ssh.stack import GATEWAY, SERVICE, Stack
from tests.support.loadgen import LoadGenerator

pytestmark = pytest.mark.slow


def replicas_by_host(status: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for group in status.get("groups", []):
        for r in group.get("replicas", []):
            if r.get("ready"):
                found.setdefault(r["agent"], []).append(r["id"])
    return found


def test_ssh_fleet_life(ssh_hosts: TestHosts) -> None:
    for h in ssh_hosts.hosts:
        h.mark()
    root = ssh_hosts.root / "project"
    (root / "conf").mkdir(parents=True)
    root.chmod(0o755)
    (root / "conf").chmod(0o755)
    shutil.copy(EXAMPLES / "local" / "app.py", root / "conf" / "app.py")
    (root / "conf" / "gateway.gpustack.yml").write_text(GATEWAY)
    (root / "conf" / "service.gpustack.yml").write_text(SERVICE)
    stack = Stack(root, ssh_hosts)
    stack.write(["h1", "h2", "h3"])
    try:
        plan = stack.cli("plan", "conf")
        assert "gpus-198" in plan.stdout or "gpus-127" in plan.stdout
        stack.cli("up", "conf", "--yes", timeout=600)
        out = stack.outputs()
        url, token = out["endpoint"], out["token"]
        for _ in range(20):
            status, body = http("GET", url + "/", token)
            assert status == 200, body
        placed = replicas_by_host(stack.status())
        assert sum(len(v) for v in placed.values()) == 3 and len(placed) >= 2, placed

        # Remove a host that runs replicas, under load: no request fails.
        victim = next(h for h in ssh_hosts.hosts if any(h.address.replace(".", "-") in a for a in placed))
        keep = [h.name for h in ssh_hosts.hosts if h is not victim]
        stack.write(keep)
        plan = stack.cli("plan", "conf")
        assert "- " in plan.stdout and victim.address.replace(".", "-") in plan.stdout, plan.stdout
        load = LoadGenerator(url + "/", token, rate=20, duration=600, max_requests=20000).start()
        try:
            stack.cli("up", "conf", "--yes", timeout=600)
        finally:
            load.stop()
        assert load.result.outcomes and not load.result.failures, load.result.failures[:5]
        assert victim.installed_files() == [] and victim.wait_only_sshd() == []
        placed = replicas_by_host(stack.status())
        assert sum(len(v) for v in placed.values()) == 3 and not any(victim.address.replace(".", "-") in a for a in placed)

        # Lose a host: its agent, replicas and sshd die. Its replicas are re-placed within 30 s.
        lost = next(h for h in ssh_hosts.hosts if h is not victim and any(h.address.replace(".", "-") in a for a in placed))
        load = LoadGenerator(url + "/", token, rate=20, duration=600, max_requests=20000).start()
        time.sleep(1.0)  # some traffic before the loss
        killed_at = load.elapsed()
        lost.stop_sshd()
        lost.kill_all()
        t0 = time.monotonic()
        def replaced() -> bool:
            p = replicas_by_host(stack.status())
            return sum(len(v) for v in p.values()) == 3 and not any(lost.address.replace(".", "-") in a for a in p)

        try:
            wait_until(replaced, 30, 0.5, "replicas re-placed off the lost host")
        except AssertionError:
            _, agents = http("GET", out["control_url"] + "/control/agents", out["admin_token"])
            raise AssertionError(f"{json.dumps(stack.status(), indent=1)}\n{agents.decode()}") from None
        print(f"\nre-placed {time.monotonic() - t0:.1f} s after the host was lost")
        time.sleep(2.0)
        result = load.stop()
        # Only requests in flight on the killed replicas may fail: none started a few seconds after the loss.
        late = result.failures_after(killed_at + 5.0)
        print(f"during the loss: {len(result.outcomes)} requests, {len(result.failures)} failed, {len(late)} of them later than 5 s")
        assert result.outcomes and not late, late[:5]
        status, _ = http("GET", url + "/", token)
        assert status == 200
        lost.start_sshd()  # the host comes back (empty): destroy must still clean it
    finally:
        for h in ssh_hosts.hosts:  # a host the test stopped comes back, so destroy can clean it
            if h.sshd is None or h.sshd.poll() is not None:
                h.start_sshd()
        stack.cli("destroy", "--yes", check=False, timeout=300)
    for h in ssh_hosts.hosts:
        assert h.installed_files() == [], (h.name, h.installed_files())
        assert h.wait_only_sshd() == [], h.name
