"""`up examples/local` serves real replicas: the issue's end-to-end and reboot scenarios."""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import urlparse


from tests.e2e.conftest import Project, http, kill_all, port_in_use, processes_under, wait_until


def _groups_seen(endpoint: str, token: str, n: int = 30) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, body = http("GET", endpoint + "/", token)
        assert status == 200, body
        seen[json.loads(body)["group"]] += 1
    return seen


def _replica_pids(endpoint: str, token: str) -> set[int]:
    return {json.loads(http("GET", endpoint + "/", token)[1])["pid"] for _ in range(30)}


def test_up_serves_both_groups_then_update_and_destroy(local_project: Project) -> None:
    up = local_project.cli("up", "local", "--yes")
    assert "Endpoint:" in up.stdout and "curl" in up.stdout
    assert "e2e-test-passphrase" not in up.stdout + up.stderr  # nothing secret printed
    outputs = local_project.outputs()
    endpoint, token = outputs["endpoint"], outputs["token"]
    assert token not in up.stdout + up.stderr

    seen = _groups_seen(endpoint, token)
    assert set(seen) == {"base", "burst"}, seen

    assert http("GET", endpoint + "/")[0] == 401
    assert http("GET", endpoint + "/", "wrong-token")[0] == 401

    status = local_project.cli("status").stdout
    assert "hello" in status and "base" in status and "burst" in status
    assert "2/2" in status and "1/1" in status
    # Piped (as here), nothing wraps: the curl hint is one line, every replica id and URL whole.
    curl = [line for line in up.stdout.splitlines() if "curl " in line]
    assert len(curl) == 1 and curl[0].rstrip().endswith(f"{endpoint}/"), up.stdout
    assert "TOKEN=$(gpustack-iac output token --show-secrets --project" in curl[0] and "${TOKEN:?no token}" in curl[0]
    services = json.loads(local_project.cli("status", "--format", "json").stdout)["services"]
    ids = [r["id"] for g in services[0]["groups"] for r in g["replicas"]]
    assert len(ids) == 3 and all(rid in status for rid in ids), status
    assert f"hello: {services[0]['endpoint']}" in status
    every = local_project.cli("logs", "hello").stdout  # a header per replica when several match
    assert every.count("==> hello-base-") == 2 and every.count("==> hello-burst-") == 1, every
    assert "hello-base-" not in local_project.cli("logs", "hello", "--group", "burst").stdout
    assert "listening on 127.0.0.1:" in every  # the example app says what it does
    for args, expected in ((("--group", "nosuch"), "service hello has no group 'nosuch'; its groups: base, burst"),
                           (("-r", "9"), "service hello has no replica 9; its replicas: "),
                           (("--group", "burst", "-r", "9"), "group burst has no replica 9; its replicas: ")):
        wrong = local_project.cli("logs", "hello", *args, check=False)
        assert wrong.returncode == 1 and expected in wrong.stderr, wrong.stderr
    unknown = local_project.cli("logs", "nosuch", check=False)
    assert unknown.returncode == 1 and "no service 'nosuch'; the stack runs: hello" in unknown.stderr, unknown.stderr
    assert "HTTP 404" not in unknown.stderr

    # A no-op plan after up: nothing to change.
    plan = local_project.cli("plan", "local", "--detailed-exitcode", check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr

    # Changing commands replaces the replicas (new processes), through a rolling update.
    before = _replica_pids(endpoint, token)
    hello = local_project.config / "hello.gpustack.yml"
    hello.write_text(hello.read_text().replace("python3 app.py", "python3 app.py --version-tag v2"))
    plan = local_project.cli("plan", "local")
    assert "rolling update" in plan.stdout, plan.stdout
    local_project.cli("up", "local", "--yes")
    after = wait_until(lambda: (p := _replica_pids(endpoint, token)) and not (p & before) and p, 60, what="new replicas")
    assert len(after) == 3

    gateway_port = urlparse(endpoint).port
    local_project.cli("destroy", "--yes")
    assert processes_under(local_project.root) == []
    assert gateway_port is not None and not port_in_use(gateway_port)


def test_reboot_recreates_with_same_endpoint_and_token(local_project: Project) -> None:
    local_project.cli("up", "local", "--yes")
    outputs = local_project.outputs()
    endpoint, token = outputs["endpoint"], outputs["token"]
    assert _groups_seen(endpoint, token, 6)

    # A machine restart: every process up started dies at once.
    victims = processes_under(local_project.root)
    assert len(victims) >= 6  # 2 agents, 1 gateway, 3 replicas (and their shells)
    kill_all(victims)
    wait_until(lambda: not processes_under(local_project.root), 10, what="all processes gone")

    plan = local_project.cli("plan", "local")
    assert "replace" in plan.stdout or "create" in plan.stdout, plan.stdout

    local_project.cli("up", "local", "--yes")
    again = local_project.outputs()
    assert again["endpoint"] == endpoint and again["token"] == token
    seen = wait_until(lambda: set(_groups_seen(endpoint, token, 12)) == {"base", "burst"}, 60, what="both groups serving")
    assert seen
