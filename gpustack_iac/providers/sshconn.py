"""One verified SSH connection to a fleet host (fabric), and its failures as one-line errors.

Fabric's default accepts any unknown host key (paramiko's AutoAddPolicy); a fleet host's key is
verified instead: against the configured known_hosts file, or against a SHA256 fingerprint given
in the configuration. An unknown key is refused unless the fleet's policy is `accept-new` (then it
is recorded in the known_hosts file, as OpenSSH's `StrictHostKeyChecking=accept-new` does); a
changed key is always refused.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection

from gpustack_iac.errors import GpustackError

CONNECT_TIMEOUT = 15.0

# paramiko's transport thread logs each failed handshake (a host that accepts TCP and closes, a
# wrong key) with a traceback; with no logging configured Python prints it to stderr. connect()
# reports every such failure as one SshHostError, so the thread's copy is not wanted.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class SshHostError(GpustackError):
    """A fleet host could not be reached, authenticated, verified or prepared."""


class SshTrustError(SshHostError):
    """The host answered but cannot be trusted or logged in to: a wrong, unknown or changed host key,
    or refused credentials. Unlike "unreachable", waiting does not fix it, so it is never taken for a
    host that is down."""


@dataclass(frozen=True)
class SshTarget:
    """Everything needed to reach one host; plain values so they travel in Pulumi inputs."""

    hostname: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    host_key: str | None = None  # "SHA256:..." pins the key instead of known_hosts
    host_key_policy: str = "strict"  # or "accept-new"
    proxy_jump: dict[str, Any] | None = None

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> SshTarget:
        return cls(
            hostname=str(props["hostname"]), port=int(props.get("port") or 22), user=props.get("user") or None,
            identity_file=props.get("identity_file") or None, known_hosts=props.get("known_hosts") or None,
            host_key=props.get("host_key") or None, host_key_policy=str(props.get("host_key_policy") or "strict"),
            proxy_jump=props.get("proxy_jump") or None,
        )

    @property
    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.hostname}:{self.port}"

    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts"))


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a key, as `ssh-keygen -lf` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class _Pinned(paramiko.MissingHostKeyPolicy):
    def __init__(self, expected: str) -> None:
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        actual = fingerprint(key)
        if actual != self.expected:
            raise SshTrustError(f"host key mismatch: the host offered {actual}, the configuration pins {self.expected}")


class _Strict(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise SshTrustError(f"unknown host key {fingerprint(key)} (not in {self.known_hosts}); add it with ssh-keyscan after "
                           "checking it, pin it with host_key, or set host_key_policy: accept-new")


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _client_policy(target: SshTarget, client: paramiko.SSHClient) -> None:
    # Fabric loads the system known_hosts and sets AutoAddPolicy: replace both.
    client.get_host_keys().clear()
    client._system_host_keys.clear()  # noqa: SLF001 - paramiko has no public way to drop them
    if target.host_key:
        client.set_missing_host_key_policy(_Pinned(target.host_key))
        return
    path = target.known_hosts_path()
    if path.exists():
        client.load_host_keys(str(path))
    client.set_missing_host_key_policy(_AcceptNew(path) if target.host_key_policy == "accept-new" else _Strict(path))


def _connect_kwargs(identity_file: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"banner_timeout": CONNECT_TIMEOUT, "auth_timeout": CONNECT_TIMEOUT,
                              "allow_agent": identity_file is None, "look_for_keys": identity_file is None}
    if identity_file:
        kwargs["key_filename"] = os.path.expanduser(identity_file)
    return kwargs


class _JumpedConnection(Connection):
    """A connection that closes its jump host's connection with its own.

    Fabric's `close` leaves a `gateway=` Connection open: each connect through a `proxy_jump` left a
    `sshd: user [priv]` session on the jump host until the process exited."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            if isinstance(self.gateway, Connection):
                self.gateway.close()


def connect(target: SshTarget) -> Connection:
    """An open, verified connection, or SshHostError naming the host and what went wrong."""
    gateway = None
    if target.proxy_jump:
        jump = SshTarget(hostname=str(target.proxy_jump["hostname"]), port=int(target.proxy_jump.get("port") or 22),
                         user=target.proxy_jump.get("user"), identity_file=target.proxy_jump.get("identity_file"),
                         known_hosts=target.known_hosts, host_key_policy=target.host_key_policy)
        gateway = connect(jump)
    conn = _JumpedConnection(target.hostname, user=target.user, port=target.port, gateway=gateway,
                             connect_kwargs=_connect_kwargs(target.identity_file), connect_timeout=CONNECT_TIMEOUT)
    _client_policy(target, conn.client)
    try:
        _open(conn, target)
    except BaseException:
        conn.close()  # the jump host's session too
        raise
    return conn


def _open(conn: Connection, target: SshTarget) -> None:
    """Open `conn`; paramiko's failures become one SshHostError naming the host."""
    started = time.monotonic()
    try:
        conn.open()
    except SshHostError as exc:
        raise type(exc)(f"host {target.label}: {exc}") from None
    except paramiko.BadHostKeyException as exc:
        raise SshTrustError(f"host {target.label}: host key mismatch: the host offered {fingerprint(exc.key)}, "
                           f"{target.known_hosts_path()} has {fingerprint(exc.expected_key)} (the host was reinstalled, "
                           "or someone is in between); check it before updating known_hosts") from None
    except paramiko.AuthenticationException:
        raise SshTrustError(f"host {target.label}: authentication refused for user {target.user or '(default)'} "
                           f"with {target.identity_file or 'the default keys'}") from None
    except (socket.timeout, TimeoutError):
        raise SshHostError(f"host {target.label}: unreachable (timed out after {CONNECT_TIMEOUT:g} s)") from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        reason = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()}))
        raise SshHostError(f"host {target.label}: unreachable ({reason})") from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        why = _handshake_failure(exc, time.monotonic() - started)
        raise SshHostError(f"host {target.label}: unreachable ({why})") from None


def _handshake_failure(exc: BaseException, elapsed: float) -> str:
    """Why a TCP connection that opened gave no SSH session, in the user's terms.

    paramiko says "Error reading SSH protocol banner" both for a port that closed at once and for
    one that sent nothing, and "No existing session" for a handshake that timed out: neither says
    what happened at that port or how long was waited."""
    text = str(exc)
    if elapsed >= CONNECT_TIMEOUT - 0.5:
        return f"no SSH handshake within {CONNECT_TIMEOUT:g} s: the port accepted the connection but did not answer"
    if text.startswith("Indecipherable protocol version"):
        sent = text.removeprefix("Indecipherable protocol version").strip()[:60]
        return f"not an SSH server: it sent {sent} instead of an SSH banner"
    if text.startswith(("Error reading SSH protocol banner", "Invalid SSH banner")) or isinstance(exc, EOFError):
        return "the port closed the connection without an SSH banner: not an SSH server, or one refusing this client"
    return text or type(exc).__name__
