"""HTTP/1.1 rules shared by the data-plane server and the upstream client, on top of llhttp.

llhttp (through httptools, in its default strict mode) does the framing: request and status
lines, header syntax (it refuses control bytes in values, bare CR or LF, obs-folds, whitespace
before a colon), Content-Length and chunked bodies, trailers. What a proxy must refuse beyond a
parser's job is here or in the server: a request target that is not visible ASCII (llhttp allows
some bytes a next hop might read differently), codings that cannot be delimited, and fields that
must appear once (`server.py`: two Authorization or Host headers would let one of them win somewhere).
"""

from __future__ import annotations

import re

MAX_HEAD_BYTES = 64 * 1024  # request or response head, status line and headers together

# Framing of a message body.
NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3

# A request target is visible ASCII only (RFC 9112 3.2; RFC 3986 characters are a subset).
_BAD_IN_TARGET = re.compile(rb"[^\x21-\x7e]")


class HttpProtocolError(Exception):
    """The peer sent something that is not valid HTTP/1.1, or that a proxy must not pass on."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_target(target: bytes) -> None:
    if not target or _BAD_IN_TARGET.search(target) is not None:
        raise HttpProtocolError("control or non-ASCII character in the request target")


def is_chunked(values: list[str]) -> bool:
    """True when `chunked` is the final coding; any other final coding is refused (not delimitable)."""
    codings = [c.strip().lower() for v in values for c in v.split(",") if c.strip()]
    if not codings or codings[-1] != "chunked" or codings.count("chunked") != 1:
        raise HttpProtocolError(f"unsupported Transfer-Encoding {', '.join(values)[:80]!r}", 501)
    return True


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
