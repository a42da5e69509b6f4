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
from typing import Any, Iterator

import psutil
import pytest
from conftest import AgentProcess, app_command, require_data_plane, shared_agent, wait_until  # noqa: F401 - fixtures
from controller_fixtures import GatewayProcess, echo_group, service_def, wait_ready

from gpustack_iac.contract.restart import stamp_generations
from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.spec.loader import load_text
from tests.support.hostile_corpus import Case, corpus, h11_rejects, read_to_eof, status_of  # noqa: F401 - Case for readers

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
            try:
                sock.sendall(heads[i] + piece)
            except OSError:
                # Refused on the head and closed before this MiB was all sent (a loaded machine: HAProxy got
                # to the head while the client was still writing); the answer is in our receive queue.
                pass
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
