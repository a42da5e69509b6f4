"""The hostile-request corpus (issue 13 item 5, issue 19 item 6): malformed and smuggling requests
that a gateway data plane must answer with an error status and a closed connection, forwarding
nothing. Data-plane neutral: `corpus(token)` addresses `/services/svc/...` with a bearer token, and
`answer(port, data)` sends one case to any proxy on loopback. h11 is the differential reference.

Used by tests/runtime/test_gateway_hostile.py (the Python gateway) and
tests/runtime/test_dataplane_hostile.py (each native data plane).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

import h11

MiB = 2**20


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


def answer(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send one case on a fresh loopback connection and read until the proxy closes it; raises
    socket.timeout when the connection is left open."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_to_eof(sock)
