"""The local backend heals itself and keeps secrets from its processes.

- `kill -9` of the gateway or of an agent under load: the watchdog restarts it at once, with no
  `up`; only requests in flight on the killed gateway fail (new connections wait in the listen
  backlog the watchdog keeps open), and a killed agent costs no request at all.
- No agent, gateway, watchdog or replica sees the CLI's passphrases or credentials.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil

from gpustack_iac.runtime.watchdog import live_pid
from tests.e2e.conftest import Project, http, wait_until
from tests.support.loadgen import LoadGenerator

SECRETS = {
    "GPUSTACK_PASSPHRASE": "e2e-test-passphrase",
    "PULUMI_CONFIG_PASSPHRASE": "e2e-test-passphrase",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-for-e2e",
    "AWS_ACCESS_KEY_ID": "AKIAE2ETEST",
    "KUBECONFIG": "/nonexistent/kubeconfig-e2e",
    "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/gcp-e2e.json",
    "AZURE_CLIENT_SECRET": "azure-secret-for-e2e",
    "GITHUB_TOKEN": "ghp_e2etoken",
}


def _daemon_dir(project: Project, kind: str) -> Path:
    pattern = "gateways/*/gateway.pid.json" if kind == "gateway" else "hosts/*/agent.pid.json"
    found = sorted((project.root / ".gpustack" / "local").rglob(pattern))
    assert found, f"no {kind} pid file under {project.root}"
    return found[0].parent


def _replica_pids(project: Project) -> dict[int, str]:
    marker = str(project.root)
    found: dict[int, str] = {}
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if env.get("GPUSTACK_AGENT_STATE_DIR", "").startswith(marker) and "GPUSTACK_REPLICA_ID" in env:
            found[proc.pid] = env["GPUSTACK_REPLICA_ID"]
    return found


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_no_secret_reaches_daemons_or_replicas(local_project: Project) -> None:
    local_project.extra_env.update(SECRETS)
    local_project.cli("up", "local", "--yes")
    gateway_dir, agent_dir = _daemon_dir(local_project, "gateway"), _daemon_dir(local_project, "agent")
    pids = {
        "gateway": live_pid(gateway_dir / "gateway.pid.json"),
        "gateway watchdog": live_pid(gateway_dir / "gateway.watchdog.json"),
        "agent": live_pid(agent_dir / "agent.pid.json"),
        "agent watchdog": live_pid(agent_dir / "agent.watchdog.json"),
    }
    replicas = wait_until(lambda: len(set((r := _replica_pids(local_project)).values())) == 3 and r, 60, what="3 replicas")
    checked = {name: found[0] for name, found in pids.items() if found} | {f"replica {rid} ({pid})": pid for pid, rid in replicas.items()}
    assert len(checked) == 4 + len(replicas)
    for what, pid in checked.items():
        environ = _environ(pid)
        names = {item.split(b"=", 1)[0].decode() for item in environ.split(b"\0") if item}
        for name, value in SECRETS.items():
            assert name not in names, f"{name} is in the environment of the {what}"
            assert value.encode() not in environ, f"the value of {name} is in the environment of the {what}"
        assert "PATH" in names, what
    # What a replica does get: the runtime's variables (and the configuration's env).
    replica_env = _environ(next(iter(replicas)))
    assert b"PORT=" in replica_env and b"GPUSTACK_REPLICA_ID=" in replica_env


def _kill_child_under_load(project: Project, kind: str) -> dict[str, float]:
    """SIGKILL the gateway or an agent 2 s into a 6 s load; returns what the bench prints too."""
    project.cli("up", "local", "--yes")
    outputs = project.outputs()
    endpoint, token = outputs["endpoint"], outputs["token"]
    wait_until(lambda: http("GET", endpoint + "/", token)[0] == 200, 60, what="the service to answer")
    daemon_dir = _daemon_dir(project, kind)
    child_file = daemon_dir / f"{kind}.pid.json"
    victim = live_pid(child_file)
    assert victim is not None
    replicas_before = _replica_pids(project)

    load = LoadGenerator(endpoint + "/", token, rate=50, duration=6.0, max_requests=400, timeout=30).start()
    wait_until(lambda: load.elapsed() >= 2.0, 10, 0.01, what="2 s of load")
    killed_at = time.time()
    killed_rel = load.elapsed()
    os.kill(victim[0], signal.SIGKILL)
    restarted = wait_until(lambda: (p := live_pid(child_file)) and p[0] != victim[0] and p, 30, 0.01,
                           what=f"the {kind} to be restarted")
    ready = wait_until(lambda: json.loads((daemon_dir / f"{kind}.port.json").read_text() or "{}")
                       .get("pid") == restarted[0] and time.time(), 30, 0.01, what=f"the new {kind} to listen")
    result = load.wait()

    assert len(result.outcomes) >= 250, len(result.outcomes)
    # Only requests that were already in flight on the killed process may fail.
    late = [o for o in result.failures if o.at > killed_rel]
    assert not late, [(round(o.at, 3), o.status, o.error) for o in late[:5]]
    if kind == "agent":
        assert not result.failures, result.statuses  # the data plane never goes through an agent
    # The replicas are the same processes: re-adopted, none started beside them.
    assert _replica_pids(project) == replicas_before
    return {"restart_s": restarted[1] - killed_at, "ready_s": ready - killed_at,
            "failed": float(len(result.failures)), "requests": float(len(result.outcomes))}


def test_kill_9_gateway_under_load_is_back_without_up(local_project: Project) -> None:
    figures = _kill_child_under_load(local_project, "gateway")
    # The first restart is immediate: the new process exists well within 2 s of the kill.
    assert figures["restart_s"] < 2.0, figures
    status = local_project.cli("status").stdout
    assert "hello" in status and "2/2" in status and "1/1" in status


def test_kill_9_agent_under_load_is_back_without_up(local_project: Project) -> None:
    figures = _kill_child_under_load(local_project, "agent")
    assert figures["restart_s"] < 2.0, figures
    assert "hello" in local_project.cli("status").stdout
