"""Hostile clients against the real gateway process (issue 13 items 5, 6, 8 and 10) over loopback sockets.

One gateway process (small connection cap and header timeout) with one agent and two services for
the module: `svc` (echo replica) and `rl`, whose `rate_limits` come from a YAML service file.

- A corpus of malformed and smuggling requests: each gets 400 and a closed connection, nothing
  reaches the replica; h11, installed for the tests, is the differential reference (where it
  rejects a case too, the test checks that it does).
- Unauthenticated 60 MiB uploads are refused on the head: 401, no `100 Continue`, gateway RSS flat.
- Connections past the cap get 503; a head that does not arrive in time gets 408.
- Rate limits end to end: a burst over rps + burst gets 429 with Retry-After; other clients and
  keys pass.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import h11
import psutil
import pytest
from conftest import AgentProcess, app_command, require_data_plane, shared_agent, wait_until  # noqa: F401 - fixtures
from controller_fixtures import GatewayProcess, echo_group, service_def, wait_ready

from gpustack_iac.contract.restart import stamp_generations
from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.spec.loader import load_text

MAX_CONNECTIONS = 24
HEADER_TIMEOUT = 2.0
MiB = 2**20

RATE_LIMITED_SERVICE = f"""\
type: service
name: rl
port: 8000
commands: [{json.dumps(app_command("echo.py"))}]
resources: {{cpu: 1.., memory: 1MB.., disk: 1MB..}}
rate_limits:
  - prefix: /limited
    rps: 0.5
    burst: 2
  - prefix: /keyed
    rps: 0.5
    key: {{type: header, header: X-Api-Key}}
"""


@pytest.fixture(scope="module", params=["python", "haproxy"])
def module_data_plane(request: pytest.FixtureRequest) -> str:
    """The corpus runs against each data plane (tests/runtime/conftest.py marks HAProxy's known gaps)."""
    return require_data_plane(str(request.param))


@pytest.fixture(scope="module")
def hostile(
    module_data_plane: str, shared_agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("hostile-gateway")
    gw = GatewayProcess(
        root=root, token=new_token(), admin_token=new_token(),
        extra_flags=["--max-client-connections", str(MAX_CONNECTIONS), "--header-timeout", str(HEADER_TIMEOUT),
                     "--data-plane", module_data_plane],
    )
    write_token_file(root / "token", gw.token)
    write_token_file(root / "admin-token", gw.admin_token)
    try:
        gw.start()
        gw.register_agent("local", shared_agent)
        gw.put_service(service_def("svc", echo_group("main", "m1")))
        definition = stamp_generations(load_text(RATE_LIMITED_SERVICE).services[0].to_runtime())
        definition["probe"] = {"url": "/health", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.3}
        gw.put_service(definition)
        wait_ready(gw, "svc", {"main": 1})
        wait_ready(gw, "rl", {"default": 1})
        yield gw
    finally:
        for name in ("svc", "rl"):
            try:
                gw.control("DELETE", f"/control/services/{name}")
            except OSError:
                pass
        gw.stop_everything()


# --- raw sockets ------------------------------------------------------------------------------------------
def connect(gw: GatewayProcess, source: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=20, source_address=(source, 0) if source else None)
    return sock


def read_to_eof(sock: socket.socket, limit: int = 1 * MiB) -> bytes:
    """Everything until the gateway closes; a socket timeout here means the connection was left open."""
    data = b""
    while len(data) < limit:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            break
        if not piece:
            break
        data += piece
    return data


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert match, response[:200]
    return int(match.group(1))


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def service_requests(gw: GatewayProcess, service: str) -> int:
    status, body = gw.get("/metrics", token=gw.admin_token)
    assert status == 200
    match = re.search(rb'^gpustack_service_requests_total\{service="%s"\} (\d+)' % service.encode(), body, re.M)
    return int(match.group(1)) if match else 0


# --- the corpus -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    h11_rejects: bool  # h11 refuses it too; False where h11 is lenient by design (it says why in `note`)
    note: str = ""
    status: int = 400


def corpus(token: str) -> list[Case]:
    auth = f"Authorization: Bearer {token}\r\n".encode()
    head = b"Host: x\r\n" + auth
    post = b"POST /services/svc/echo HTTP/1.1\r\n" + head
    chunked = post + b"Transfer-Encoding: chunked\r\n\r\n"
    get = b"GET /services/svc/echo HTTP/1.1\r\n" + head
    return [
        # Issue 13 item 5, one by one.
        Case("te-vertical-tab", post + b"Transfer-Encoding: \x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True),
        Case("te-form-feed", post + b"Transfer-Encoding: chunked\x0c\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True),
        Case("chunk-extension-bare-lf", chunked + b"5;a\nb\r\nhello\r\n0\r\n\r\n", True),
        Case("chunk-size-leading-space", chunked + b" 5\r\nhello\r\n0\r\n\r\n", True),
        Case("trailer-garbage", chunked + b"5\r\nhello\r\n0\r\ngarbage\r\n\r\n", True),
        Case("trailer-nul", chunked + b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n", True),
        Case("header-value-soh", get + b"X-A: a\x01b\r\n\r\n", False, "h11 allows any byte but CR/LF/NUL in a value"),
        Case("header-value-esc", get + b"X-A: a\x1bb\r\n\r\n", False, "as above"),
        Case("header-value-del", get + b"X-A: a\x7fb\r\n\r\n", False, "as above"),
        Case("target-soh", b"GET /services/svc/a\x01b HTTP/1.1\r\n" + head + b"\r\n", True),
        Case("target-del", b"GET /services/svc/a\x7fb HTTP/1.1\r\n" + head + b"\r\n", True),
        Case("target-tab", b"GET /services/svc/a\tb HTTP/1.1\r\n" + head + b"\r\n", True),
        Case("bare-lf-only", b"GET /services/svc/echo HTTP/1.1\nHost: x\n" + auth.replace(b"\r\n", b"\n") + b"\n", False,
             "h11 accepts bare LF line endings"),
        # The usual smuggling list.
        Case("cl-and-te", post + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False,
             "h11 lets Transfer-Encoding win, as RFC 9112 6.3 allows"),
        Case("te-and-cl", post + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", False, "as above"),
        Case("duplicate-cl", post + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", True),
        Case("duplicate-cl-same", post + b"Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", False,
             "h11 merges equal values (RFC 9110 8.6 allows it)"),
        Case("cl-list", post + b"Content-Length: 4, 4\r\n\r\nabcd", False, "as above"),
        Case("cl-plus", post + b"Content-Length: +4\r\n\r\nabcd", True),
        Case("cl-negative", post + b"Content-Length: -1\r\n\r\n", True),
        Case("cl-overflow", post + b"Content-Length: 99999999999999999999999\r\n\r\n", True),
        Case("te-space-before-colon", post + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", True),
        # A coding the gateway does not know: 501, as RFC 9112 6.1 asks (and the connection closes all the same).
        Case("te-xchunked", post + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", True, status=501),
        Case("te-chunked-twice", post + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", True),
        Case("te-two-fields", post + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", True),
        Case("te-on-http10", b"POST /services/svc/echo HTTP/1.0\r\n" + head + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False,
             "h11 ignores Transfer-Encoding on HTTP/1.0"),
        Case("bare-lf-in-head", b"GET /services/svc/echo HTTP/1.1\r\nHost: x\nX-Injected: 1\r\n" + auth + b"\r\n", False,
             "h11 accepts bare LF"),
        Case("bare-cr-in-head", b"GET /services/svc/echo HTTP/1.1\r\nHost: x\rX-Injected: 1\r\n" + auth + b"\r\n", True),
        Case("obs-fold", get + b"X-A: a\r\n folded\r\n\r\n", False, "h11 unfolds obs-fold as RFC 9112 5.2 allows"),
        Case("nul-in-name", get + b"X\x00A: a\r\n\r\n", True),
        Case("nul-in-request-line", b"GET /services/svc/echo HTTP/1.1\x00\r\n" + head + b"\r\n", True),
        Case("space-before-colon", b"GET /services/svc/echo HTTP/1.1\r\nHost : x\r\n" + auth + b"\r\n", True),
        Case("chunk-size-overflow", chunked + b"10000000000000001\r\nx\r\n0\r\n\r\n", False,
             "h11 waits for the announced bytes instead"),
        Case("chunk-size-hex-prefix", chunked + b"0x5\r\nhello\r\n0\r\n\r\n", True),
        Case("chunk-extension-control", chunked + b"5;\x01\r\nhello\r\n0\r\n\r\n", False, "h11 does not parse extensions"),
        Case("chunk-extension-bare-cr", chunked + b"5;a\rb\r\nhello\r\n0\r\n\r\n", False, "as above"),
        Case("chunk-data-without-crlf", chunked + b"5\r\nhelloXX0\r\n\r\n", True),
        Case("garbage-request-line", b"GARBAGE\r\n\r\n", True),
        Case("http-0.9", b"GET /services/svc/echo\r\n\r\n", True),
        Case("huge-header-count", get + b"".join(b"X-%d: 1\r\n" % i for i in range(1000)) + b"\r\n", False,
             "h11 bounds the head's size only"),
        Case("two-authorization", b"GET /services/svc/echo HTTP/1.1\r\nHost: x\r\n" + auth + b"Authorization: Bearer other\r\n\r\n",
             False, "h11 leaves repeated fields to the application"),
        # httptools has llhttp skip an upgrade request's body: it must not be parsed as a second request.
        Case("upgrade-with-body", b"POST /services/svc/echo HTTP/1.1\r\n" + head + b"Connection: Upgrade\r\nUpgrade: x\r\n"
             b"Content-Length: 39\r\n\r\nGET /services/svc/smuggled HTTP/1.1\r\n\r\n", False, "h11 reads the body first"),
        Case("two-host", b"GET /services/svc/echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n" + auth + b"\r\n", True),
        # Issue 19 item 6: the head limit holds when the whole head arrives in one read, and an
        # HTTP/1.1 request must name its Host (RFC 9112 3.2).
        Case("uri-64k", b"GET /services/svc/" + b"a" * 65536 + b" HTTP/1.1\r\n" + head + b"\r\n", False,
             "h11 bounds only a head it is still waiting for", status=431),
        Case("header-70k", get + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", False, "as above", status=431),
        Case("http11-without-host", b"GET /services/svc/echo HTTP/1.1\r\n" + auth + b"\r\n", True),
    ]


def h11_rejects(data: bytes) -> bool:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        for _ in range(100):
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.EndOfMessage):
                return False
    except h11.RemoteProtocolError:
        return True
    return False


def test_malformed_and_smuggling_corpus_gets_400_and_a_closed_connection(hostile: GatewayProcess) -> None:
    gw = hostile
    status, _ = gw.get("/services/svc/before")
    assert status == 200
    served_before = service_requests(gw, "svc")
    wrong: list[str] = []
    cases = corpus(gw.token)
    for case in cases:
        if case.h11_rejects and not h11_rejects(case.data):
            wrong.append(f"{case.name}: the reference (h11) accepts it; the table says it rejects")
        with connect(gw) as sock:
            sock.sendall(case.data)
            try:
                response = read_to_eof(sock)  # returns only once the gateway closed the connection
            except socket.timeout:
                wrong.append(f"{case.name}: no answer or connection left open")
                continue
        if not response or status_of(response) != case.status:
            wrong.append(f"{case.name}: answered {response[:60]!r}")
    assert wrong == []
    assert service_requests(gw, "svc") == served_before, "a malformed request reached the replica"
    # The same connection handling still serves a well-formed request and a chunked body.
    with connect(gw) as sock:
        sock.sendall(b"POST /services/svc/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + gw.token.encode()
                     + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
        response = read_to_eof(sock)
    assert status_of(response) == 200 and json.loads(response.split(b"\r\n\r\n", 1)[1])["body"] == "hello"


def test_an_unsolicited_101_from_the_replica_is_not_relayed(hostile: GatewayProcess) -> None:
    # The gateway never forwards Upgrade, so a replica's 101 is a protocol error: relayed, the client
    # waited on a connection that had stopped speaking HTTP.
    with connect(hostile) as sock:
        sock.sendall(b"GET /services/svc/echo?status=101 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + hostile.token.encode() + b"\r\nConnection: close\r\n\r\n")
        response = read_to_eof(sock)  # a socket timeout here: the 101 was relayed and the client stalled
    assert status_of(response) == 502, response[:200]


def test_unauthenticated_uploads_are_refused_on_the_head_without_reading_the_body(hostile: GatewayProcess) -> None:
    gw = hostile
    proc = psutil.Process(gw.pid)
    baseline = proc.memory_info().rss
    peak = baseline
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.01)

    size = 60 * MiB
    heads = [
        b"POST /services/svc/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size,
        b"POST /services/svc/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: %d\r\n\r\n" % size,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size,
        b"PUT /services/svc/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size,
    ]
    results: list[Any] = [None] * len(heads)

    def upload(i: int) -> None:
        piece = b"x" * MiB
        if b"chunked" in heads[i]:
            piece = b"%x\r\n%s\r\n" % (len(piece), piece)
        with connect(gw) as sock:
            sock.sendall(heads[i] + piece)
            response = read_head(sock)  # the answer is there after one MiB: nobody waits for the rest
            try:
                for _ in range(59):
                    sock.sendall(piece)
            except OSError:
                pass  # the gateway stopped listening to us: fine, that is the point
            results[i] = response

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(heads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sampling.set()
        sampler.join()
    assert [status_of(r) for r in results] == [401] * len(heads), results
    # Six 60 MiB bodies read into memory would add hundreds of MB.
    assert peak - baseline < 24 * MiB, (baseline, peak)

    # Expect: 100-continue: the refusal comes instead of the interim answer, and no body is sent at all.
    with connect(gw) as sock:
        sock.sendall(b"POST /services/svc/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % size)
        head = read_head(sock)
        assert status_of(head) == 401 and b"WWW-Authenticate: Bearer" in head
    # With the token, 100-continue is answered and the body goes through.
    with connect(gw) as sock:
        sock.sendall(b"POST /services/svc/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + gw.token.encode()
                     + b"\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        response = read_to_eof(sock)
        assert status_of(response) == 200 and b'"body": "hello"' in response


def test_connections_past_the_cap_get_503_and_slow_heads_get_408(hostile: GatewayProcess) -> None:
    gw = hostile
    request = b"GET /services/svc/held HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + gw.token.encode() + b"\r\n\r\n"
    held: list[socket.socket] = []
    try:
        refused = b""
        for _ in range(MAX_CONNECTIONS + 10):  # bounded: a few connections of earlier tests may still linger
            sock = connect(gw)
            held.append(sock)
            sock.sendall(request)
            head = read_head(sock)
            if status_of(head) == 503:
                refused = head + read_to_eof(sock)
                break
            assert status_of(head) == 200
            read_head_body = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            rest = head.split(b"\r\n\r\n", 1)[1]
            while len(rest) < read_head_body:
                rest += sock.recv(65536)
        assert refused, "no connection was refused"
        assert b'"too_many_connections"' in refused
        served = len(held) - 1
        assert MAX_CONNECTIONS - 4 <= served <= MAX_CONNECTIONS
        # Still full: the next one is refused too; once one closes, a new one is served again.
        with connect(gw) as sock:
            assert status_of(read_to_eof(sock)) == 503
        held.pop(0).close()

        def served_again() -> bool:
            with connect(gw) as sock:
                sock.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
                return status_of(read_to_eof(sock)) == 200

        wait_until(served_again, timeout=20, interval=0.2, what="a connection served after one closed")
    finally:
        for sock in held:
            sock.close()

    # A head that does not arrive in time: 408 and closed; a connection that sends nothing is closed.
    with connect(gw) as sock:
        sock.sendall(b"GET /services/svc/slow HTTP/1.1\r\nHo")
        started = time.monotonic()
        response = read_to_eof(sock)
        assert status_of(response) == 408
        assert time.monotonic() - started < 20
    with connect(gw) as sock:
        assert read_to_eof(sock) == b""


def test_rate_limits_from_the_yaml_are_enforced_end_to_end(hostile: GatewayProcess) -> None:
    gw = hostile
    auth = {"Authorization": f"Bearer {gw.token}"}

    def get(path: str, source: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20, source_address=(source, 0) if source else None)
        try:
            conn.request("GET", path, headers={**auth, **(headers or {})})
            response = conn.getresponse()
            response.read()
            return response.status, response.getheader("Retry-After")
        finally:
            conn.close()

    # rps 0.5 and burst 2: three pass at once, then one every two seconds.
    burst = [get("/services/rl/limited/x") for _ in range(10)]
    passed = [s for s, _ in burst if s == 200]
    limited = [(s, r) for s, r in burst if s == 429]
    assert 3 <= len(passed) <= 4 and len(passed) + len(limited) == 10, burst
    assert all(r is not None and int(r) >= 1 for _, r in limited), limited
    assert burst[:3] == [(200, None)] * 3
    # The same client is limited however it spells the path...
    for path in ("/services/rl//limited/x", "/services/rl/%6cimited/x", "/services/rl/./limited/x"):
        assert get(path)[0] == 429, path
    # ...while another client address, and a path outside every prefix, pass.
    assert get("/services/rl/limited/x", source="127.0.0.2")[0] == 200
    assert get("/services/rl/free")[0] == 200
    # Keyed by a header: each key has its own bucket.
    assert get("/services/rl/keyed", headers={"X-Api-Key": "a"})[0] == 200
    status, retry = get("/services/rl/keyed", headers={"X-Api-Key": "a"})
    assert status == 429 and retry is not None
    assert get("/services/rl/keyed", headers={"X-Api-Key": "b"})[0] == 200
    assert get("/services/svc/not-limited")[0] == 200

    # A changed `rate_limits` reaches the gateway without touching the replica.
    definition = stamp_generations(load_text(RATE_LIMITED_SERVICE.replace("rps: 0.5\n    burst: 2", "rps: 1000\n    burst: 100")).services[0].to_runtime())
    definition["probe"] = {"url": "/health", "method": "GET", "headers": {}, "body": None, "timeout": 2, "interval": 0.3}
    before = {r["id"]: r["pid"] for g in gw.service("rl")["groups"] for r in g["replicas"]}
    gw.put_service(definition)
    wait_until(lambda: all(get("/services/rl/limited/y")[0] == 200 for _ in range(6)), timeout=20, interval=0.3,
               what="the raised limit in the gateway")
    assert {r["id"]: r["pid"] for g in gw.service("rl")["groups"] for r in g["replicas"]} == before
