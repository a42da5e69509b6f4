"""Tunables of the gateway data plane (the entry point fills them from flags)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewaySettings:
    hold_queue: int = 100  # requests that may wait per scaled-to-zero service
    hold_timeout: float = 120.0  # seconds a held request waits for the first replica
    connect_timeout: float = 5.0
    # Seconds of silence allowed between two reads from an upstream; LLM prefill can be slow.
    read_timeout: float | None = 600.0
    max_connections: int = 4096  # pooled upstream connections in all
    max_connections_per_upstream: int = 0  # 0: no per-replica limit
    keepalive_timeout: float = 30.0  # idle pooled connections are closed after this
    upstream_retries: int = 2  # further replicas tried after a failed connect, before the first byte
    max_body_bytes: int = 64 * 1024 * 1024
    # Responses with a Content-Length up to this are read whole and sent in one write (fewer
    # syscalls for the common small JSON answer); anything else is streamed chunk by chunk.
    buffer_limit: int = 256 * 1024
    # Client side. Past `max_client_connections` a new connection gets 503 and is closed, so a flood
    # of idle sockets cannot exhaust file descriptors; the listen backlog is sized for the cap so a
    # burst of connects is queued by the kernel rather than dropped.
    max_client_connections: int = 4096
    listen_backlog: int = 4096
    header_timeout: float = 20.0  # seconds a client has to send a whole request head
    max_header_count: int = 100
    # Set when only the HAProxy data plane on loopback reaches this server: a rate limit keyed by
    # address then counts the client that HAProxy saw (the last X-Forwarded-For entry, which
    # HAProxy appends), not HAProxy itself.
    behind_local_proxy: bool = False

    def __post_init__(self) -> None:
        if self.hold_queue < 0 or self.hold_timeout < 0:
            raise ValueError("hold_queue and hold_timeout must be >= 0")
        if self.upstream_retries < 0:
            raise ValueError("upstream_retries must be >= 0")
        if self.max_connections < 1 or self.max_connections_per_upstream < 0:
            raise ValueError("max_connections must be >= 1 and max_connections_per_upstream >= 0")
        if self.max_client_connections < 1 or self.listen_backlog < 1 or self.max_header_count < 1:
            raise ValueError("max_client_connections, listen_backlog and max_header_count must be >= 1")
        if self.header_timeout <= 0:
            raise ValueError("header_timeout must be > 0")
