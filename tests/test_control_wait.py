"""`up` waits for a gateway's control API that is still booting (a cloud gateway answers minutes
after its instance exists), reporting each try, within a bound; a refused token fails at once."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.providers.control import await_controller


class _Health(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == "Bearer admin"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_waits_for_a_control_api_that_starts_late_and_reports_each_try() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    reports: list[str] = []
    servers: list[ThreadingHTTPServer] = []

    def report(message: str) -> None:
        reports.append(message)
        if len(reports) == 2:  # the gateway "finishes booting" after two failed tries
            server = ThreadingHTTPServer(("127.0.0.1", port), _Health)
            servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()

    try:
        await_controller(url, "admin", wait=120, report=report)
        assert len(reports) == 2 and all(url in r and "try" in r for r in reports), reports
        with pytest.raises(RuntimeApiError, match="HTTP 401"):
            await_controller(url, "wrong", wait=120, report=reports.append)
        assert len(reports) == 2, "a refused token is not retried"
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_gives_up_after_the_bound() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RuntimeApiError, match="did not answer within 3 s"):
        await_controller(url, "admin", wait=3, report=lambda _: None)
