"""Loopback ports for tests: the one place that allocates them.

A port is picked by binding port 0 and releasing it: the kernel does not hand the same ephemeral
port out again soon, so it is free for the server a test starts next, or closed (connections
refused) for a test of an unreachable peer. Servers a test runs in-process bind port 0 themselves
and read their port back instead.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    return free_port()
