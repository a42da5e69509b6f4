"""Loopback control calls never go through `http_proxy`: the providers' client, the CLI's status/logs, the agent client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpustack_iac.runtime import sync_client as http
from gpustack_iac.runtime.client import AgentClient

TOKEN = "loopback-test-token"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = json.dumps({"path": self.path, "ok": ok}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def dead_proxy(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every proxy variable pointing at a closed loopback port, and no no_proxy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections to it are refused
    proxy = f"http://127.0.0.1:{port}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return proxy


def test_the_proxy_variables_do_reach_urllib(server: str, dead_proxy: str) -> None:
    # The control: without the bypass, urllib sends loopback calls to the dead proxy.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server + "/x", timeout=10)


def test_provider_calls_and_streams_bypass_the_proxy(server: str, dead_proxy: str) -> None:
    assert http.call("GET", server, "/control/agents", TOKEN) == {"path": "/control/agents", "ok": True}
    assert json.loads(b"".join(http.stream(server, "/logs", TOKEN))) == {"path": "/logs", "ok": True}
    assert http.call("GET", server.replace("127.0.0.1", "localhost"), "/y", TOKEN)["ok"] is True


def test_the_agent_client_bypasses_the_proxy(server: str, dead_proxy: str) -> None:
    async def main() -> object:
        async with AgentClient(server, TOKEN) as client:
            return await client._json("GET", "/v1/info")

    assert asyncio.run(main()) == {"path": "/v1/info", "ok": True}


@pytest.mark.parametrize(
    ("url", "loopback"),
    [("http://127.0.0.1:1/x", True), ("http://127.8.9.1/", True), ("http://[::1]:80/", True), ("http://localhost/", True),
     ("http://198.18.0.1/", False), ("http://example.com/", False)],
)
def test_is_loopback(url: str, loopback: bool) -> None:
    assert http.is_loopback(url) is loopback
