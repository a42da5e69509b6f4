"""Reading replica log files: the last N lines, and following new output."""

from __future__ import annotations

import os
from pathlib import Path

_BLOCK = 64 * 1024


def tail_bytes(path: Path, lines: int) -> tuple[bytes, int]:
    """The last `lines` lines of `path` (all of it when lines <= 0) and the file's size read up to."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if lines <= 0:
                f.seek(0)
                return f.read(size), size
            # Read backwards block by block until enough newlines are seen: O(tail), not O(file).
            pos = size
            data = b""
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(_BLOCK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
            kept = data.splitlines(keepends=True)[-lines:]
            return b"".join(kept), size
    except FileNotFoundError:
        return b"", 0


def read_from(path: Path, offset: int, limit: int = _BLOCK) -> tuple[bytes, int]:
    """Bytes appended to `path` since `offset`, and the new offset; starts over if the file shrank."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < offset:
                offset = 0  # rotated or truncated
            f.seek(offset)
            data = f.read(min(limit, size - offset))
            return data, offset + len(data)
    except FileNotFoundError:
        return b"", offset
