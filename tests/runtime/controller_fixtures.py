"""Fixtures for controller tests: the real gateway process (proxy + controller) and a bounded load.

The gateway runs as `python -m gpustack_iac.runtime.gateway` on free ports with its own tokens and
state dir under tmp_path; it is stopped by pid in teardown, also when a test failed. Agents come
from tests/runtime/conftest.py (`agent_factory`), which kills their replicas the same way.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.auth import new_token, write_token_file
from conftest import PYTHON, AgentProcess, app_command, wait_until

# Fast loop settings so tests converge in seconds, not minutes.
TEST_FLAGS = [
    "--reconcile-interval", "0.2",
    "--drain-seconds", "0.5",
    "--stop-grace", "3",
    "--startup-deadline", "30",
    "--probe-failures", "2",
    # Short autoscaler windows: scale-up and scale-down within seconds.
    "--autoscale-stable-window", "3",
    "--autoscale-panic-window", "1",
    "--autoscale-burst-release", "1",
    "--log-level", "INFO",
]


def request(method: str, url: str, token: str | None, body: Any = None, timeout: float = 15.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class GatewayProcess:
    root: Path
    token: str
    admin_token: str
    port: int = 0
    control_port: int = 0
    pid: int = 0
    create_time: float = 0.0
    started: list[tuple[int, float]] = field(default_factory=list)
    extra_flags: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def log_file(self) -> Path:
        return self.root / "gateway.log"

    def start(self) -> None:
        """Start (or restart) on the same state dir; a restart keeps the previous ports."""
        info = procs.start_daemon(
            [
                PYTHON, "-m", "gpustack_iac.runtime.gateway",
                "--host", "127.0.0.1", "--port", str(self.port), "--control-port", str(self.control_port),
                "--token-file", str(self.root / "token"), "--admin-token-file", str(self.root / "admin-token"),
                "--state-dir", str(self.root / "state"), "--port-file", str(self.root / "gateway.port"),
                *TEST_FLAGS,
                *self.extra_flags,
            ],
            port_file=self.root / "gateway.port",
            log_file=self.log_file,
            timeout=60,
        )
        self.pid, self.create_time = info.pid, info.create_time
        self.port, self.control_port = int(info.ports["port"]), int(info.ports["control_port"])
        self.started.append((self.pid, self.create_time))

    def terminate(self) -> None:
        assert procs.stop_process(self.pid, self.create_time, grace=20), "gateway was not running"

    def stop_everything(self) -> None:
        for pid, created in self.started:
            procs.stop_process(pid, created, grace=5)

    # control API
    def control(self, method: str, path: str, body: Any = None, token: str | None = "admin") -> tuple[int, Any]:
        tok = self.admin_token if token == "admin" else token
        status, data = request(method, self.control_url + path, tok, body)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode()

    def register_agent(self, name: str, agent: AgentProcess, labels: dict[str, Any] | None = None) -> None:
        status, body = self.control("PUT", f"/control/agents/{name}", {"url": agent.url, "token": agent.token, "labels": labels or {}})
        assert status == 200, body

    def put_service(self, definition: dict[str, Any]) -> dict[str, Any]:
        status, body = self.control("PUT", f"/control/services/{definition['name']}", definition)
        assert status == 200, body
        return body

    def service(self, name: str) -> dict[str, Any]:
        status, body = self.control("GET", f"/control/services/{name}")
        assert status == 200, body
        return body

    def get(self, path: str, token: str | None = "service") -> tuple[int, bytes]:
        return request("GET", self.url + path, self.token if token == "service" else token)

    def post(self, path: str, body: Any, token: str | None = "service") -> tuple[int, bytes]:
        return request("POST", self.url + path, self.token if token == "service" else token, body)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    root = tmp_path / "gateway"
    root.mkdir()
    gw = GatewayProcess(root=root, token=new_token(), admin_token=new_token())
    write_token_file(root / "token", gw.token)
    write_token_file(root / "admin-token", gw.admin_token)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop_everything()


def echo_group(name: str, generation: str, replicas: int = 1, greeting: str = "v1", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "generation": generation,
        "replicas": {"min": replicas, "max": replicas},
        "commands": [app_command("echo.py")],
        "env": {"GREETING": greeting},
        "resources": {"cpu": {"min": 1}, "memory_bytes": {"min": 0}, "disk_bytes": {"min": 0}, "gpu": None},
        **extra,
    }


def service_def(name: str, *groups: dict[str, Any], generation: str = "s1") -> dict[str, Any]:
    return {
        "name": name,
        "generation": generation,
        "auth": True,
        "probe": {"url": "/health", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.3},
        "groups": list(groups),
    }


def ready_replicas(gw: GatewayProcess, service: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for g in gw.service(service)["groups"] for r in g["replicas"] if r["ready"]}


def wait_ready(gw: GatewayProcess, service: str, counts: dict[str, int], timeout: float = 60.0) -> dict[str, Any]:
    """Until every group named in `counts` has exactly that many ready replicas (and no others run)."""

    def check() -> dict[str, Any] | None:
        s = gw.service(service)
        for g in s["groups"]:
            if g["name"] in counts and (g["ready"] != counts[g["name"]] or len(g["replicas"]) != counts[g["name"]]):
                return None
        return s

    return wait_until(check, timeout=timeout, interval=0.2, what=f"{service} ready {counts}")


@dataclass
class Load:
    """A bounded loopback load: `workers` threads doing sequential GETs until stopped (or the cap)."""

    gw: GatewayProcess
    path: str
    workers: int = 2
    max_requests: int = 20000
    max_seconds: float = 120.0
    pause: float = 0.01
    body: Any = None  # a JSON body turns the GETs into POSTs
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _work(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.ok + len(self.failures) >= self.max_requests:
                    return
            started = time.monotonic()
            try:
                if self.body is None:
                    status, body = self.gw.get(self.path)
                else:
                    status, body = self.gw.post(self.path, self.body)
                outcome: dict[str, Any] | str = json.loads(body) if status == 200 else f"{status} {body[:200]!r}"
            except OSError as exc:
                outcome = f"error {exc}"
            with self._lock:
                if isinstance(outcome, dict):
                    self.ok += 1
                    outcome["_started"] = started  # monotonic time the request was sent
                    self.answers.append(outcome)
                else:
                    self.failures.append(outcome)
            time.sleep(self.pause)

    def __enter__(self) -> "Load":
        for _ in range(self.workers):
            t = threading.Thread(target=self._work, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def count(self) -> int:
        with self._lock:
            return self.ok + len(self.failures)

    def wait_more(self, n: int, timeout: float = 30.0) -> None:
        start = self.count()
        wait_until(lambda: self.count() >= start + n, timeout=timeout, what=f"{n} more requests")


AgentFactory = Callable[[], AgentProcess]
