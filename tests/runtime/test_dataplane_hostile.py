"""The hostile-request corpus against each native data plane alone (issue 22), case by case.

The Python gateway answers every case with its status and a closed connection, forwarding nothing
(tests/runtime/test_gateway_hostile.py, which runs the corpus as one test per data plane). Here each
case is its own test against the data plane alone: HAProxy 2.6 (Debian's) with the configuration
the gateway renders (HaproxyDataPlane), one service with bearer auth, its replica slot and the
Python plane's port both pointing at an upstream that counts the request heads it receives, so
anything HAProxy lets through is seen. A case HAProxy does not refuse as the gateway does is an
xfail naming what it did (`strict`: once the renderer makes it refuse, the marker has to go).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from gpustack_iac.runtime.auth import new_token
from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute, Upstream
from gpustack_iac.runtime.gateway.settings import GatewaySettings
from tests.support.hostile_corpus import Case, answer, corpus, status_of
from tests.support.ports import free_port

TOKEN = new_token()
CASES = {case.name: case for case in corpus(TOKEN)}

# What HAProxy 2.6 alone does, with the rendered configuration, for the cases it does not refuse as the gateway
# does (observed here). "Forwards" means the upstream got the request; the renderer's rules or the
# `option`s it sets must turn each into a refusal, or the gateway's documentation must say the case is
# normalised instead (HAProxy re-frames what it forwards, so most of these cannot smuggle a second request).
_NORMALISES = "HAProxy lets Transfer-Encoding win and drops Content-Length (RFC 9112 6.3 allows it), forwarding re-framed"
HAPROXY_GAPS: dict[str, str] = {
    "trailer-nul": "forwards: a NUL in a trailer field is not checked (trailers are dropped before forwarding)",
    "bare-lf-only": "forwards: HAProxy accepts bare LF line endings",
    "bare-lf-in-head": "forwards: HAProxy accepts a bare LF inside the head (a header-injection vector for lenient upstreams)",
    "cl-and-te": _NORMALISES,
    "te-and-cl": _NORMALISES,
    "duplicate-cl-same": "forwards: equal duplicate Content-Length values are merged (RFC 9110 8.6 allows it)",
    "cl-list": "forwards: a list of equal Content-Length values is merged (as above)",
    "te-xchunked": "refused and closed, but 400 where the gateway answers 501 (RFC 9112 6.1)",
    "obs-fold": "forwards: obs-fold is unfolded (RFC 9112 5.2 allows it)",
    "chunk-extension-control": "forwards: chunk extensions are skipped unparsed",
    "upgrade-with-body": "forwards the Upgrade request with its body (the gateway never forwards Upgrade)",
    "uri-64k": "refused and closed, but 400 where the gateway answers 431 (the head exceeds tune.bufsize)",
    "header-70k": "refused and closed, but 400 where the gateway answers 431 (as above)",
}


REQUEST_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/\d\.\d")


@dataclass
class CountingUpstream:
    """A loopback HTTP/1.1 upstream that answers 200 to every request head and counts the heads."""

    port: int = 0
    heads: int = 0
    sock: socket.socket = field(default_factory=socket.socket)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while piece := self._recv(conn):
                buffer += piece
                while b"\r\n\r\n" in buffer:
                    part, buffer = buffer.split(b"\r\n\r\n", 1)
                    if not REQUEST_LINE.search(part):
                        # A chunked body's last chunk ("0" and the blank line) is no request head. Counted,
                        # it arrived after the head had been answered and was taken for the next case's.
                        continue
                    with self.lock:
                        self.heads += 1
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    except OSError:
                        return  # the proxy closed its side: counted all the same

    @staticmethod
    def _recv(conn: socket.socket) -> bytes:
        try:
            return conn.recv(65536)
        except OSError:
            return b""

    def stop(self) -> None:
        self.sock.close()


@dataclass
class DataPlane:
    name: str
    port: int
    upstream: CountingUpstream


def _need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is missing: .ci/run installs it")
        pytest.skip(f"{binary} is not installed (apt-get install {binary})")
    return path


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlane]:
    _need("haproxy")
    from gpustack_iac.runtime.gateway.haproxy.dataplane import HaproxyDataPlane, PlaneOptions

    upstream = CountingUpstream()
    upstream.start()
    table = RoutingTable()
    table.set_service(ServiceRoute("svc", auth=True, model=None,
                                   upstreams=(Upstream("svc-0", "main", f"http://127.0.0.1:{upstream.port}"),)))
    # The Python plane (activator, 404s) is the counting upstream too: "alone" means nothing behind HAProxy refuses.
    options = PlaneOptions(host="127.0.0.1", port=free_port(), python_port=upstream.port,
                           directory=tmp_path_factory.mktemp("haproxy-hostile") / "plane", token=TOKEN, threads=1,
                           settings=GatewaySettings(header_timeout=2.0))
    plane = HaproxyDataPlane(table, options)
    try:
        plane.start()
        yield DataPlane("haproxy", options.port, upstream)
    finally:
        plane.stop()
        upstream.stop()


def test_a_well_formed_request_is_forwarded(haproxy: DataPlane) -> None:
    before = haproxy.upstream.heads
    response = answer(haproxy.port, b"GET /services/svc/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    assert haproxy.upstream.heads == before + 1


def _params(gaps: dict[str, str]) -> list[object]:
    return [pytest.param(name, marks=pytest.mark.xfail(reason=gaps[name], strict=True)) if name in gaps else name
            for name in CASES]


@pytest.mark.parametrize("name", _params(HAPROXY_GAPS))
def test_haproxy_alone_refuses_the_case_and_closes(haproxy: DataPlane, name: str) -> None:
    case: Case = CASES[name]
    before = haproxy.upstream.heads
    response, closed = _answer_or_forwarded(haproxy, case.data, before)
    assert haproxy.upstream.heads == before, f"{name}: forwarded to the upstream"
    assert closed, f"{name}: no answer, or the connection was left open"
    assert response, f"{name}: closed without an answer"
    assert status_of(response) == case.status, response[:120]


def _answer_or_forwarded(plane: DataPlane, data: bytes, before: int) -> tuple[bytes, bool]:
    """Read until the proxy closes (a refusal), or stop early once the upstream saw the request and its answer
    came back (the proxy keeps that connection alive: waiting for a close would only cost time)."""
    with socket.create_connection(("127.0.0.1", plane.port), timeout=30) as sock:
        sock.sendall(data)
        sock.settimeout(0.2)
        response = b""
        for _ in range(150):  # 30 s at most
            try:
                piece = sock.recv(65536)
            except socket.timeout:
                if plane.upstream.heads > before and b"\r\n\r\n" in response:
                    return response, False
                continue
            except ConnectionResetError:
                return response, True
            if not piece:
                return response, True
            response += piece
    return response, False
