"""Agents joining the controller by themselves with a fleet's join token (docs/cloud.md#joining).

On loopback: the real gateway process with a join-token directory and agents started by hand
with a join file, as a cloud node's user data starts them. A joined agent gets a replica placed
on it; a wrong join token is refused (401) and logged; after the gateway comes back with empty
state the agent joins again by itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import shutil
from pathlib import Path
from typing import Any, Iterator

import psutil
from conftest import PYTHON, kill_all_replicas, wait_until
from controller_fixtures import GatewayProcess, echo_group, request, service_def, wait_ready

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.auth import new_token, write_token_file


@contextlib.contextmanager
def _gateway(root: Path, join_dir: Path) -> Iterator[GatewayProcess]:
    root.mkdir()
    gw = GatewayProcess(root=root, token=new_token(), admin_token=new_token(),
                        extra_flags=["--join-token-dir", str(join_dir)])
    write_token_file(root / "token", gw.token)
    write_token_file(root / "admin-token", gw.admin_token)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop_everything()


@contextlib.contextmanager
def _joining_agent(root: Path, gw: GatewayProcess, join_token: str, name: str) -> Iterator[Path]:
    """An agent started the way cloud user data starts one; yields its log file. The join token
    is in a file, never in the agent's argv or environment."""
    root.mkdir()
    write_token_file(root / "token", new_token())
    write_token_file(root / "join.token", join_token)
    info = procs.start_daemon(
        [PYTHON, "-m", "gpustack_iac.runtime.agent", "--host", "127.0.0.1", "--port", "0",
         "--token-file", str(root / "token"), "--state-dir", str(root / "state"),
         "--port-file", str(root / "agent.port"), "--name", name,
         "--controller-url", gw.control_url, "--join-token-file", str(root / "join.token"),
         "--fleet", "gpu", "--node-group", "gpu-spot", "--label", "region=local",
         "--join-check-interval", "0.3"],
        port_file=root / "agent.port", log_file=root / "agent.log", timeout=60)
    try:
        proc = psutil.Process(info.pid)
        assert join_token not in " ".join(proc.cmdline()) and join_token not in str(proc.environ())
        yield root / "agent.log"
    finally:
        procs.stop_process(info.pid, info.create_time, grace=5)
        kill_all_replicas(root / "state")


def _agents(gw: GatewayProcess) -> dict[str, Any]:
    status, body = gw.control("GET", "/control/agents")
    assert status == 200, body
    return {a["name"]: a for a in body}


def test_agent_joins_gets_a_replica_and_rejoins_after_gateway_state_loss(tmp_path: Path) -> None:
    join_dir = tmp_path / "joins"
    join_dir.mkdir(mode=0o700)
    join_token = new_token()
    write_token_file(join_dir / "gpu.token", join_token)
    with _gateway(tmp_path / "gw", join_dir) as gw, _joining_agent(tmp_path / "a1", gw, join_token, "node-1"):
        agent = wait_until(lambda: _agents(gw).get("node-1"), timeout=60, what="node-1 joined")
        assert agent["labels"]["fleet"] == "gpu"
        assert agent["labels"]["node_group"] == "gpu-spot"
        assert agent["labels"]["region"] == "local"
        assert agent["labels"]["facts"]["cpus"] >= 1
        gw.put_service(service_def("api", echo_group("main", "m1", replicas=1)))
        answer = wait_ready(gw, "api", {"main": 1})
        [replica] = answer["groups"][0]["replicas"]
        assert replica["agent"] == "node-1"

        # The gateway is replaced by one with empty state: the agent joins again by itself.
        gw.terminate()
        shutil.rmtree(gw.root / "state")
        gw.start()
        wait_until(lambda: "node-1" in _agents(gw), timeout=60, what="node-1 joined again")


def test_wrong_join_token_is_refused_and_logged(tmp_path: Path) -> None:
    join_dir = tmp_path / "joins"
    join_dir.mkdir(mode=0o700)
    write_token_file(join_dir / "gpu.token", new_token())
    with _gateway(tmp_path / "gw", join_dir) as gw:
        wrong = new_token()
        body = {"fleet": "gpu", "url": "http://127.0.0.1:1", "token": new_token()}
        status, _ = request("PUT", gw.control_url + "/control/join/intruder", wrong, body)
        assert status == 401
        # Nor does a fleet without a join token admit anyone, nor does the admin API take a join token.
        assert request("PUT", gw.control_url + "/control/join/x", wrong, {**body, "fleet": "other"})[0] == 401
        assert request("GET", gw.control_url + "/control/agents", wrong)[0] == 401
        with _joining_agent(tmp_path / "a1", gw, wrong, "node-bad") as agent_log:
            wait_until(lambda: "controller refused" in agent_log.read_text(), timeout=60, what="agent saw the refusal")
            assert "node-bad" not in _agents(gw)
        log = gw.log_file.read_text()
        assert "refused join of agent 'intruder'" in log and "refused join of agent 'node-bad'" in log
        assert wrong not in log and wrong not in agent_log.read_text()


def test_a_join_token_vouches_only_for_its_own_fleet(tmp_path: Path) -> None:
    join_dir = tmp_path / "joins"
    join_dir.mkdir(mode=0o700)
    gpu, cpu = new_token(), new_token()
    write_token_file(join_dir / "gpu.token", gpu)
    write_token_file(join_dir / "cpu.token", cpu)
    with _gateway(tmp_path / "gw", join_dir) as gw:
        gw.control("PUT", "/control/agents/static-1", {"url": "http://127.0.0.1:9", "token": new_token(), "labels": {}})
        body = {"fleet": "gpu", "url": "http://127.0.0.1:9", "token": new_token(), "labels": {"fleet": "cpu"}}
        # Another fleet's token, or a name registered outside the fleet: refused.
        assert request("PUT", gw.control_url + "/control/join/n1", cpu, body)[0] == 401
        assert request("PUT", gw.control_url + "/control/join/static-1", gpu, body)[0] == 409
        # The controller sets the fleet label from the token, whatever the agent claims.
        assert request("PUT", gw.control_url + "/control/join/n1", gpu, body)[0] == 200
        assert _agents(gw)["n1"]["labels"]["fleet"] == "gpu"
        assert request("GET", gw.control_url + "/control/join/n1?fleet=gpu", gpu)[0] == 200
        assert request("GET", gw.control_url + "/control/join/n1?fleet=cpu", cpu)[0] == 404
        # A join file others can read is not used: nobody joins that fleet.
        (join_dir / "cpu.token").chmod(0o644)
        assert request("PUT", gw.control_url + "/control/join/n2", cpu, {**body, "fleet": "cpu"})[0] == 401


def test_join_checks_the_token_on_the_head_and_refuses_deep_json_with_400(tmp_path: Path) -> None:
    join_dir = tmp_path / "joins"
    join_dir.mkdir(mode=0o700)
    join_token = new_token()
    write_token_file(join_dir / "gpu.token", join_token)
    with _gateway(tmp_path / "gw", join_dir) as gw:
        # A wrong token with a megabyte announced and never sent: refused on the head, at once.
        with socket.create_connection(("127.0.0.1", gw.control_port), timeout=20) as sock:
            sock.sendall(b"PUT /control/join/intruder HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + new_token().encode()
                         + b"\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                piece = sock.recv(65536)  # times out (20 s) when the gateway waits for the body
                assert piece, head
                head += piece
        assert head.startswith(b"HTTP/1.1 401 "), head[:80]
        # The fleet's token with a deeply nested body: 400, not a 500 with a traceback in the log.
        conn = http.client.HTTPConnection("127.0.0.1", gw.control_port, timeout=20)
        try:
            deep = b"[" * 200_000 + b"]" * 200_000
            conn.request("PUT", "/control/join/deep", body=deep,
                         headers={"Authorization": f"Bearer {join_token}", "Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 400, response.read()[:200]
            assert json.loads(response.read())["error"]["code"] == "invalid_json"
        finally:
            conn.close()
        log = gw.log_file.read_text()
        assert "Traceback" not in log and "Error handling request" not in log, log[-2000:]
