"""Which environment variables a daemon or a replica may inherit: an allow-list, never a deny-list.

The CLI's environment holds the state passphrase, cloud credentials and tokens; a workload that
could read them could decrypt the state or act as the operator. So a process the runtime starts
gets only the names below (a deny-list would miss the next credential variable someone invents),
plus what the runtime sets for it and, for a replica, the configuration's own `env`.
"""

from __future__ import annotations

from typing import Iterable, Mapping

# What any program needs to find executables, its home, its locale and a temporary directory.
BASE_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM"})
BASE_PREFIXES = ("LC_",)

# The Docker client's own settings: where the daemon is (Docker, or `podman system service`), which
# context, which config (and so which stored registry credentials), TLS. Paths and switches, never
# secrets themselves. A container replica's client process gets them; the container never does.
CONTAINER_CLIENT_NAMES = frozenset({
    "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_API_VERSION",
    "CONTAINER_HOST", "CONTAINERS_CONF", "XDG_RUNTIME_DIR",
})

# Also needed by the runtime's own daemons (agent, gateway, their watchdog): where Python and its
# packages live, which CA bundle to trust, how to reach Docker. Paths and switches, never secrets.
DAEMON_NAMES = BASE_NAMES | frozenset({
    "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "COVERAGE_PROCESS_START",
}) | CONTAINER_CLIENT_NAMES


def _allowed(name: str, names: frozenset[str], extra: Iterable[str]) -> bool:
    return name in names or name.startswith(BASE_PREFIXES) or name in set(extra)


def daemon_env(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The part of `environ` an agent, a gateway or a watchdog may see (plus the names in `extra`)."""
    keep = tuple(extra)
    return {k: v for k, v in environ.items() if _allowed(k, DAEMON_NAMES, keep)}


def replica_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` a replica inherits; the agent adds the runtime's variables and the service's `env`."""
    return {k: v for k, v in environ.items() if _allowed(k, BASE_NAMES, ())}


def container_client_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The container client settings present in `environ` (see CONTAINER_CLIENT_NAMES)."""
    return {k: v for k, v in environ.items() if k in CONTAINER_CLIENT_NAMES}
