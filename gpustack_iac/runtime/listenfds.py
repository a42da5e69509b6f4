"""Listening sockets handed down by a supervisor (the watchdog), found by name.

The watchdog binds a daemon's ports itself and passes the sockets to each child it starts, so
connections that arrive while the child restarts wait in the kernel's backlog instead of being
refused. The child learns which descriptor is which from one variable:
`GPUSTACK_LISTEN_FDS=port=3,control_port=4`.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

LISTEN_FDS_ENV = "GPUSTACK_LISTEN_FDS"


def format_fds(fds: Mapping[str, int]) -> str:
    return ",".join(f"{name}={fd}" for name, fd in fds.items())


def parse_fds(value: str) -> dict[str, int]:
    fds: dict[str, int] = {}
    for item in filter(None, value.split(",")):
        name, _, fd = item.partition("=")
        if not name or not fd.isdigit():
            raise ValueError(f"{LISTEN_FDS_ENV}: {item!r} is not NAME=FD")
        fds[name] = int(fd)
    return fds


def inherited_socket(name: str, environ: Mapping[str, str] | None = None) -> socket.socket | None:
    """The listening socket passed down as `name`, or None when this process was started without one."""
    env = os.environ if environ is None else environ
    fd = parse_fds(env.get(LISTEN_FDS_ENV, "")).get(name)
    if fd is None:
        return None
    sock = socket.socket(fileno=fd)
    # Replicas and other grandchildren must not hold the daemon's port open.
    sock.set_inheritable(False)
    return sock
