"""Fixtures for runtime tests: a real agent subprocess on a free port with its own state dir.

Everything a test starts is stopped in teardown by pid (agents) and by the replica marker
environment (replicas), even when the test failed half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import psutil
import pytest

from gpustack_iac.runtime import procs
from gpustack_iac.runtime.agent import pgroup
from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.runtime.client import AgentClient

APPS_DIR = Path(__file__).parent / "apps"
PYTHON = sys.executable
T = TypeVar("T")


def app_command(app: str, *args: str) -> str:
    """A shell command running one of tests/runtime/apps/*.py with this interpreter."""
    return " ".join(shlex.quote(a) for a in (PYTHON, str(APPS_DIR / app), *args))


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - a poll may fail while things start; keep the last error
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")


def http_get(url: str, token: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str, token: str | None = None) -> Any:
    status, body = http_get(url, token)
    assert status == 200, (status, body)
    return json.loads(body)


def replica_processes(replica_id: str, state_dir: Path, app: str | None = None) -> list[psutil.Process]:
    """Live processes of a replica (optionally only the interpreters running `app`, not the shell)."""
    found = pgroup.find_replica_processes(replica_id, str(state_dir.resolve()))
    if app is None:
        return found
    out = []
    for proc in found:
        try:
            if str(APPS_DIR / app) in proc.cmdline():
                out.append(proc)
        except psutil.Error:
            continue
    return out


def kill_all_replicas(state_dir: Path) -> None:
    key = str(state_dir.resolve())
    victims: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(pgroup.AGENT_ENV) == key:
                victims.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in victims:
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    psutil.wait_procs(victims, timeout=10)


@dataclass
class AgentProcess:
    """A real agent process; `restart()` starts a new one on the same state dir and port."""

    root: Path
    token: str
    port: int = 0
    pid: int = 0
    create_time: float = 0.0
    started: list[tuple[int, float]] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def log_file(self) -> Path:
        return self.root / "agent.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        info = procs.start_daemon(
            [
                PYTHON, "-m", "gpustack_iac.runtime.agent",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--token-file", str(self.token_file), "--state-dir", str(self.state_dir),
                "--port-file", str(self.root / "agent.port"), "--name", "test-host",
            ],
            port_file=self.root / "agent.port",
            log_file=self.log_file,
            timeout=60,
        )
        self.pid, self.create_time, self.port = info.pid, info.create_time, int(info.ports["port"])
        self.started.append((self.pid, self.create_time))

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert procs.wait_gone(self.pid, self.create_time, 10), "agent survived SIGKILL"

    def terminate(self) -> None:
        assert procs.stop_process(self.pid, self.create_time, grace=15)

    def restart(self) -> None:
        self.start()

    def client(self, token: str | None = None) -> AgentClient:
        return AgentClient(self.url, token or self.token)

    def call(self, fn: Callable[[AgentClient], Awaitable[T]], token: str | None = None) -> T:
        """Run one client call to completion (tests are synchronous; the client is async)."""

        async def run() -> T:
            async with self.client(token) as client:
                return await fn(client)

        return asyncio.run(run())

    def stop_everything(self) -> None:
        for pid, created in self.started:
            procs.stop_process(pid, created, grace=5)
        kill_all_replicas(self.state_dir)


@contextlib.contextmanager
def _agents(base: Path) -> Iterator[Callable[[], AgentProcess]]:
    made: list[AgentProcess] = []

    def make() -> AgentProcess:
        root = base / f"agent{len(made)}"
        root.mkdir()
        agent = AgentProcess(root=root, token=new_token())
        write_token_file(agent.token_file, agent.token)
        made.append(agent)
        agent.start()
        return agent

    try:
        yield make
    finally:
        for agent in made:
            agent.stop_everything()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[[], AgentProcess]]:
    """Start any number of agents; all of them and their replicas are killed afterwards."""
    with _agents(tmp_path) as make:
        yield make


@pytest.fixture
def agent(agent_factory: Callable[[], AgentProcess]) -> AgentProcess:
    """A fresh agent for one test."""
    return agent_factory()


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent for a whole module (tests must use distinct replica ids); saves start-up time."""
    with _agents(tmp_path_factory.mktemp("shared")) as make:
        yield make()


# --- the gateway tests run once per data plane (docs/gateway.md) ------------------------------------
# These modules' tests start their gateway through gateway_fixtures.gateway(), which reads
# GPUSTACK_DATA_PLANE: each test runs against the Python data plane and against HAProxy in front
# of it, asserting the same things.
DATA_PLANE_MODULES = frozenset({
    "test_gateway", "test_gateway_hold", "test_gateway_ratelimit", "test_gateway_streaming", "test_router_gateway",
})
# Test -> why it cannot pass on HAProxy yet (reported in docs/gateway.md's gap list); xfail, not strict.
HAPROXY_XFAIL: dict[str, str] = {
    "test_metrics_endpoint_is_protected_prometheus_text":
        "latency counts arrive by HAProxy's log datagram after each answer; an exact count read at once may race it (passes here)",
}
# Not even run on HAProxy: it would spend minutes of suite time on cases known to time out.
HAPROXY_SKIP_RUN: dict[str, str] = {
    "test_connections_past_the_cap_get_503_and_slow_heads_get_408":
        "past maxconn HAProxy leaves connections in the kernel's queue instead of answering 503 (20 s to fail)",
    "test_malformed_and_smuggling_corpus_gets_400_and_a_closed_connection":
        "13 of 46 corpus cases differ: HAProxy normalises bare LF, folding, CL with TE, equal CLs and forwards them; "
        "a bad trailer is refused by the Python plane behind it with the client connection left open (docs/gateway.md)",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in DATA_PLANE_MODULES and "data_plane" in metafunc.fixturenames:
        metafunc.parametrize("data_plane", ["python", "haproxy"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "haproxy" not in (callspec.params.get("data_plane"), callspec.params.get("module_data_plane")):
            continue
        name = item.originalname  # type: ignore[attr-defined]
        if name in HAPROXY_XFAIL:
            item.add_marker(pytest.mark.xfail(reason=f"HAProxy data plane: {HAPROXY_XFAIL[name]}", strict=False))
        elif name in HAPROXY_SKIP_RUN:
            item.add_marker(pytest.mark.xfail(reason=f"HAProxy data plane: {HAPROXY_SKIP_RUN[name]}", run=False))


def require_data_plane(plane: str) -> str:
    """`plane`, when it can run here: without haproxy its tests skip, or fail under CI."""
    if plane == "haproxy":
        from gpustack_iac.runtime.gateway.haproxy.process import usable

        if not usable():
            if os.environ.get("CI"):
                pytest.fail("haproxy >= 2.6 is not on PATH (.ci/run installs it)")
            pytest.skip("haproxy >= 2.6 is not on PATH")
    return plane


@pytest.fixture(autouse=True)
def data_plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    plane = require_data_plane(str(getattr(request, "param", "python")))
    monkeypatch.setenv("GPUSTACK_DATA_PLANE", plane)
    return plane
