"""Supervision by a real agent: restart on crash with back-off, SIGTERM→grace→SIGKILL of whole groups."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from conftest import AgentProcess, app_command, http_get, http_json, replica_processes, wait_until
from gpustack_iac.runtime.agent.spec import parse_replica_spec
from gpustack_iac.runtime.agent.containers import run_argv
from gpustack_iac.runtime.agent.supervisor import backoff_delay


def test_backoff_doubles_from_half_a_second_and_caps_at_30() -> None:
    assert [backoff_delay(n, 0.5, 30.0) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_crash_is_restarted_with_growing_backoff(agent: AgentProcess) -> None:
    spec = {"id": "crash", "service": "svc", "group": "g", "commands": [app_command("crasher.py")], "env": {"CRASH_CODE": "3"}}
    agent.call(lambda c: c.start(spec))
    replica: dict[str, Any] = wait_until(
        lambda: (r := agent.call(lambda c: c.get("crash"))) and r["restarts"] >= 3 and r, timeout=60, what="three restarts"
    )
    assert replica["exit_code"] == 3 or replica["state"] == "starting"
    assert replica["state"] in ("restarting", "starting")
    log = agent.call(lambda c: c.logs("crash", tail=0))
    delays = [float(d) for d in re.findall(r"exited \(code 3\) after [\d.]+ s; restarting in ([\d.]+) s", log)]
    assert delays[:3] == [0.5, 1.0, 2.0], log
    assert log.count("crasher pid") >= 3
    # A crash-looping replica still stops cleanly, even during its back-off sleep.
    assert agent.call(lambda c: c.stop("crash", grace=2))["state"] == "stopped"
    log_file = agent.state_dir / "logs" / "crash.log"
    runs_at_stop = log_file.read_text().count("crasher pid")
    time.sleep(1.0)  # longer than the next back-off would have been: nothing may start again
    assert not (agent.state_dir / "replicas" / "crash.json").exists()
    assert log_file.read_text().count("crasher pid") == runs_at_stop


def test_replica_killed_from_outside_is_restarted_on_the_same_port(agent: AgentProcess) -> None:
    spec = {"id": "victim", "service": "svc", "group": "g", "commands": [app_command("echo.py")]}
    first = agent.call(lambda c: c.start(spec))
    wait_until(lambda: http_get(first["url"] + "/health")[0] == 200, what="replica serving")
    [python] = replica_processes("victim", agent.state_dir, app="echo.py")
    python.kill()
    again = wait_until(
        lambda: (r := agent.call(lambda c: c.get("victim"))) and r["restarts"] == 1 and r["pid"] and r,
        what="restart after kill -9",
    )
    assert again["port"] == first["port"] and again["pid"] != first["pid"]
    assert again["exit_code"] is not None  # the shell reports the killed child
    wait_until(lambda: http_get(first["url"] + "/health")[0] == 200, what="replacement serving")
    assert len(replica_processes("victim", agent.state_dir, app="echo.py")) == 1


def test_stop_escalates_to_sigkill_for_the_whole_group(agent: AgentProcess) -> None:
    # The shell and both children ignore SIGTERM; only SIGKILL to the group ends them.
    spec = {"id": "stubborn", "commands": ["trap '' TERM; sleep 300 & sleep 301 & wait"]}
    agent.call(lambda c: c.start(spec))
    wait_until(lambda: len(replica_processes("stubborn", agent.state_dir)) == 3, what="shell and two sleeps")
    began = time.monotonic()
    stopped = agent.call(lambda c: c.stop("stubborn", grace=1))
    assert time.monotonic() - began >= 1.0  # waited for the grace period first
    assert stopped["state"] == "stopped" and stopped["exit_code"] == -9
    assert replica_processes("stubborn", agent.state_dir) == []


def test_stop_with_sigterm_honoured_keeps_the_exit_code(agent: AgentProcess) -> None:
    spec = {"id": "polite", "commands": ["exec " + app_command("echo.py")]}
    replica = agent.call(lambda c: c.start(spec))
    wait_until(lambda: http_get(replica["url"] + "/health")[0] == 200, what="replica serving")
    stopped = agent.call(lambda c: c.stop("polite", grace=20))
    assert stopped["exit_code"] == 0  # echo.py exits 0 on SIGTERM: no SIGKILL was needed
    assert replica_processes("polite", agent.state_dir) == []


def test_container_command_keeps_env_values_out_of_argv() -> None:
    spec = parse_replica_spec(
        {"id": "c1", "image": "python:3.11-slim", "commands": ["python -m http.server $PORT"], "gpus": [0, 2],
         "env": {"HF_TOKEN": "hf_secret_value"}, "working_dir": "/app"}
    )
    argv = run_argv(["docker"], spec, 4000, "127.0.0.1", ["HF_TOKEN", "PORT"])
    assert argv[:6] == ["docker", "run", "--rm", "--init", "--name", "gpustack-c1"]
    assert argv[argv.index("-p") + 1] == "127.0.0.1:4000:4000"
    assert ["-e", "HF_TOKEN"] == argv[argv.index("HF_TOKEN") - 1 : argv.index("HF_TOKEN") + 1]
    assert not any("hf_secret_value" in a for a in argv)
    assert argv[argv.index("--gpus") + 1] == '"device=0,2"'
    assert argv[argv.index("-w") + 1] == "/app"
    # The image's own entrypoint (vLLM's, say) must not receive the shell as arguments: it is replaced.
    assert argv[argv.index("--entrypoint") + 1] == "/bin/sh"
    assert argv[-3:] == ["python:3.11-slim", "-c", "python -m http.server $PORT"]


def test_gpu_pinning_sets_cuda_visible_devices(agent: AgentProcess) -> None:
    host = agent.call(lambda c: c.host())
    if not host["gpus"]:
        pytest.skip("no NVIDIA GPU on this machine (the agent rejects GPU indices it does not have)")
    index = host["gpus"][-1]["index"]
    replica = agent.call(lambda c: c.start({"id": "gpu", "commands": [app_command("echo.py")], "gpus": [index]}))
    wait_until(lambda: http_get(replica["url"] + "/health")[0] == 200, what="replica serving")
    assert http_json(replica["url"] + "/x")["cuda_visible_devices"] == str(index)


def test_replica_gets_the_base_environment_not_the_agents(agent_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # An agent started by hand with the operator's whole environment still hands replicas only the
    # base set, the runtime's variables and the spec's env.
    for name in ("GPUSTACK_PASSPHRASE", "AWS_SECRET_ACCESS_KEY", "KUBECONFIG", "PULUMI_CONFIG_PASSPHRASE", "HF_TOKEN"):
        monkeypatch.setenv(name, "leak-" + name)
    monkeypatch.setenv("LC_TIME", "C")
    agent = agent_factory()
    spec = {"id": "envcheck", "service": "svc", "group": "g", "commands": [app_command("echo.py")],
            "env": {"HF_TOKEN": "asked-for"}}
    first = agent.call(lambda c: c.start(spec))
    wait_until(lambda: http_get(first["url"] + "/health")[0] == 200, what="replica serving")
    [python] = replica_processes("envcheck", agent.state_dir, app="echo.py")
    env = python.environ()
    for name in ("GPUSTACK_PASSPHRASE", "AWS_SECRET_ACCESS_KEY", "KUBECONFIG", "PULUMI_CONFIG_PASSPHRASE"):
        assert name not in env, name
    assert env["HF_TOKEN"] == "asked-for" and env["LC_TIME"] == "C" and env["PORT"] and "PATH" in env
