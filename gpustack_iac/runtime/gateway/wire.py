"""HTTP/1.1 message framing shared by the data-plane server and the upstream client.

Strict on purpose: a proxy that is lenient where its peers are strict invites request smuggling, so
obs-folded lines, whitespace before a colon, conflicting lengths and Transfer-Encoding together
with Content-Length are refused rather than guessed at (RFC 9112 sections 5, 6 and 7).
"""

from __future__ import annotations

import re

MAX_HEAD_BYTES = 64 * 1024  # request or response head, status line and headers together
# One C-level pass validates a whole head: a start line, then "token:value" lines. A lone CR or LF
# inside a field would end the line for a more lenient next hop (header injection), whitespace
# before the colon and obs-folded lines are refused by RFC 9112, NUL is never legitimate.
_VALID_HEAD = re.compile(r"[^\r\n\x00]*(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*)*")
_MAX_CHUNK_LINE = 4096
_HEX = frozenset(b"0123456789abcdefABCDEF")

# Framing of a message body.
NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3


class HttpProtocolError(Exception):
    """The peer sent something that is not valid HTTP/1.1 framing."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


Header = tuple[str, str]


def head_lines(head: bytes) -> list[str]:
    """The lines of a head (without its final empty line), validated: start line first, then "name:value" lines."""
    text = head.decode("latin-1")
    if _VALID_HEAD.fullmatch(text) is None:
        raise HttpProtocolError("malformed message head (bare CR/LF/NUL, folded line, or invalid header name)")
    return text.split("\r\n")


def split_head(head: bytes) -> tuple[str, list[Header]]:
    """(start line, [(name, value), ...]) of a head without its final empty line."""
    lines = head_lines(head)
    headers: list[Header] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return lines[0], headers


def parse_content_length(values: list[str]) -> int:
    length = -1
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part.isdigit() or not part.isascii() or len(part) > 18:
                raise HttpProtocolError(f"invalid Content-Length {value[:40]!r}")
            if length >= 0 and int(part) != length:
                raise HttpProtocolError("conflicting Content-Length values")
            length = int(part)
    return length


def is_chunked(values: list[str]) -> bool:
    """True when `chunked` is the final coding; any other final coding is refused (not delimitable)."""
    codings = [c.strip().lower() for v in values for c in v.split(",") if c.strip()]
    if not codings or codings[-1] != "chunked" or codings.count("chunked") != 1:
        raise HttpProtocolError(f"unsupported Transfer-Encoding {', '.join(values)[:80]!r}", 501)
    return True


class ChunkedDecoder:
    """Incremental decoder of a chunked body: feed bytes, get data chunks; `done` after the last chunk and trailers."""

    __slots__ = ("_buf", "_remaining", "_state", "done")

    _SIZE, _DATA, _DATA_CRLF, _TRAILER = range(4)

    def __init__(self) -> None:
        self._buf = b""
        self._remaining = 0
        self._state = self._SIZE
        self.done = False

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Decoded chunks from `data`, and whatever followed the end of the body (when `done`)."""
        out: list[bytes] = []
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = 0
        end = len(buf)
        while pos < end and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = self._DATA_CRLF
                continue
            if state == self._DATA_CRLF:
                if end - pos < 2:
                    self._buf = buf[pos:]
                    return out, b""
                if buf[pos : pos + 2] != b"\r\n":
                    raise HttpProtocolError("missing CRLF after chunk data")
                pos += 2
                self._state = self._SIZE
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if end - pos > _MAX_CHUNK_LINE:
                    raise HttpProtocolError("chunk header line too long")
                self._buf = buf[pos:]
                return out, b""
            line = buf[pos:nl]
            pos = nl + 2
            if state == self._SIZE:
                size_text = line.split(b";", 1)[0].strip(b" \t")
                # int(x, 16) alone would also take "0x1f", "+1f" and "1_f".
                if not size_text or len(size_text) > 15 or not _HEX.issuperset(size_text):
                    raise HttpProtocolError(f"invalid chunk size {line[:40]!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._state = self._TRAILER
                else:
                    self._remaining = size
                    self._state = self._DATA
            elif not line:  # the empty line that ends the trailers
                self.done = True
        return out, (buf[pos:] if self.done else b"")


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
