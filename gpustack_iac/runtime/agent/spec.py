"""The replica specification an agent accepts, validated without pydantic (the agent stays small)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from gpustack_iac.errors import ReplicaSpecError

# Ids become file names and container names, so they are restricted to a safe alphabet.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# always: a service replica, restarted whenever it exits. never: a task node, run once (the task
# runner decides about retries). on-failure: a dev environment, which exits 0 when it goes idle.
RESTART_POLICIES = ("always", "on-failure", "never")


@dataclass(frozen=True)
class Mount:
    """A host directory made available to the replica at `target` (see docs/workloads.md)."""

    source: str
    target: str
    name: str = ""  # the volume's name; empty for an instance volume

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "name": self.name}


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for pulling a private image; the password never leaves the agent's records."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ContainerOptions:
    """How an `image:` replica runs, with dstack's semantics (docs/workloads.md, "Containers")."""

    port: int | None = None  # the port the container listens on; the agent publishes a free host port to it
    entrypoint: str | None = None
    user: str | None = None
    privileged: bool = False
    shm_size: int | None = None  # bytes
    host_network: bool = False  # a multi-node task's nodes reach each other by the hosts' addresses
    registry_auth: RegistryAuth | None = None

    def to_json(self, secrets: bool = False) -> dict[str, Any]:
        auth: dict[str, str] | None = None
        if self.registry_auth is not None:
            auth = {"username": self.registry_auth.username}
            if secrets:
                auth["password"] = self.registry_auth.password
        return {"port": self.port, "entrypoint": self.entrypoint, "user": self.user, "privileged": self.privileged,
                "shm_size": self.shm_size, "host_network": self.host_network, "registry_auth": auth}


@dataclass(frozen=True)
class ReplicaSpec:
    id: str
    service: str = ""
    group: str = ""
    commands: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    image: str | None = None
    gpus: tuple[int, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    restart: str = "always"
    mounts: tuple[Mount, ...] = ()
    container: ContainerOptions = field(default_factory=ContainerOptions)
    host_port: int | None = None  # a process replica whose commands bind this port themselves (no $PORT)

    def to_json(self, secrets: bool = False) -> dict[str, Any]:
        """The spec as the API shows it; `secrets` only for the agent's own records."""
        return {
            "id": self.id,
            "service": self.service,
            "group": self.group,
            "commands": list(self.commands),
            "env": dict(self.env),
            "working_dir": self.working_dir,
            "image": self.image,
            "gpus": list(self.gpus),
            "labels": dict(self.labels),
            "restart": self.restart,
            "mounts": [m.to_json() for m in self.mounts],
            "container": self.container.to_json(secrets),
            "host_port": self.host_port,
        }

    @property
    def shell_command(self) -> str:
        return " && ".join(self.commands)


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ReplicaSpecError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ReplicaSpecError(f"{key}: expected a string or null, got {type(value).__name__}")
    return value


def _str_map(data: dict[str, Any], key: str, check_names: bool) -> dict[str, str]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ReplicaSpecError(f"{key}: expected a mapping of strings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise ReplicaSpecError(f"{key}.{k}: expected a string value")
        if check_names and not _ENV_NAME_RE.match(k):
            raise ReplicaSpecError(f"{key}.{k}: not a valid environment variable name")
        out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


def parse_replica_spec(data: Any) -> ReplicaSpec:
    """Validate a JSON body into a ReplicaSpec; every problem names the property."""
    if not isinstance(data, dict):
        raise ReplicaSpecError("the body must be a JSON object (a ReplicaSpec)")
    rid = data.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise ReplicaSpecError("id: expected 1-128 characters of letters, digits, '_', '.', '-' (starting with a letter or digit)")
    commands = data.get("commands") or []
    if not isinstance(commands, list) or not all(isinstance(c, str) and c.strip() for c in commands):
        raise ReplicaSpecError("commands: expected a list of non-empty strings")
    image = _opt_str(data, "image")
    if not commands and image is None:
        raise ReplicaSpecError("commands: at least one command is needed when no image is given")
    gpus = data.get("gpus") or []
    # JSON from some callers (Pulumi structs) turns ints into floats; accept integral floats only.
    if not isinstance(gpus, list) or not all(
        isinstance(g, (int, float)) and not isinstance(g, bool) and float(g).is_integer() and g >= 0 for g in gpus
    ):
        raise ReplicaSpecError("gpus: expected a list of GPU indices (non-negative integers)")
    gpu_indices = tuple(int(g) for g in gpus)
    if len(set(gpu_indices)) != len(gpu_indices):
        raise ReplicaSpecError("gpus: an index is listed twice")
    restart = _str(data, "restart", "always")
    if restart not in RESTART_POLICIES:
        raise ReplicaSpecError(f"restart: expected one of {', '.join(RESTART_POLICIES)}, got {restart!r}")
    return ReplicaSpec(
        id=rid,
        service=_str(data, "service"),
        group=_str(data, "group"),
        commands=tuple(commands),
        env=_str_map(data, "env", check_names=True),
        working_dir=_working_dir(data),
        image=image,
        gpus=gpu_indices,
        labels=_str_map(data, "labels", check_names=False),
        restart=restart,
        mounts=_mounts(data.get("mounts")),
        container=_container(data.get("container")),
        host_port=_int_or_none(data, "host_port", 1, 65535, ""),
    )


def _working_dir(data: dict[str, Any]) -> str | None:
    # A run's code on an SSH fleet host lands under the agent user's `~/.gpustack/code/`.
    raw = _opt_str(data, "working_dir")
    return host_path(raw) if raw is not None else None


def host_path(raw: str) -> str:
    """A path on this host: `~/...` is the agent user's home (SSH fleets' volumes live there, and the
    machine that compiled the stack does not know that home)."""
    return os.path.expanduser(raw) if raw.startswith("~/") else raw


def _mounts(value: Any) -> tuple[Mount, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ReplicaSpecError("mounts: expected a list of {source, target} objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ReplicaSpecError(f"mounts[{i}]: expected an object with source and target")
        source, target = item.get("source"), item.get("target")
        if isinstance(source, str):
            source = host_path(source)
        for key, path in (("source", source), ("target", target)):
            if not isinstance(path, str) or not path.startswith("/"):
                raise ReplicaSpecError(f"mounts[{i}].{key}: expected an absolute path, got {path!r}")
        out.append(Mount(source=str(source), target=str(target), name=_str(item, "name")))
    return tuple(out)


def _int_or_none(data: dict[str, Any], key: str, low: int, high: int, where: str = "container.") -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or not low <= value <= high:
        raise ReplicaSpecError(f"{where}{key}: expected an integer {low}..{high}, got {value!r}")
    return int(value)


def _container(value: Any) -> ContainerOptions:
    if value is None:
        return ContainerOptions()
    if not isinstance(value, dict):
        raise ReplicaSpecError("container: expected an object")
    auth = value.get("registry_auth")
    registry_auth = None
    if auth is not None:
        if not isinstance(auth, dict) or not isinstance(auth.get("username"), str) or not isinstance(auth.get("password"), str):
            raise ReplicaSpecError("container.registry_auth: expected {username, password} strings")
        registry_auth = RegistryAuth(auth["username"], auth["password"])
    return ContainerOptions(
        port=_int_or_none(value, "port", 1, 65535),
        entrypoint=_opt_str(value, "entrypoint"),
        user=_opt_str(value, "user"),
        privileged=bool(value.get("privileged", False)),
        shm_size=_int_or_none(value, "shm_size", 1, 2**53),
        host_network=bool(value.get("host_network", False)),
        registry_auth=registry_auth,
    )
