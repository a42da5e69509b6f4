"""The restart rule: which changes of a service definition replace a group's replicas.

The plan summary (`plan_summary.py`) names these changes ("commands changed → rolling update"),
and the controller rolls a group when its `generation` changes. Both come from `restart_inputs`
below, so what the plan promises and what `up` does cannot disagree: the generation is a hash of
exactly the inputs the summary compares, stamped on the *final* runtime group (after compile has
prepended `setup`, resolved `working_dir` and added the volume mounts).

The functions work on the wire shape of docs/runtime-api.md ("Service definition"), the JSON the
stack registers and records in state.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

# Keys of a group whose change restarts its replicas.
GROUP_KEYS = ("commands", "image", "env", "resources", "working_dir", "mounts", "hosts", "container", "host_port")
# Keys of the service whose change restarts the replicas of every group.
SERVICE_KEYS = ("port", "probe", "probes")



def _norm(value: Any) -> Any:
    # Absent, None and empty mean the same here: a definition recorded before a key existed (or
    # with `mounts: []`) must not look changed.
    return None if value is None or (isinstance(value, (list, tuple, dict)) and not value) else value


def _no_password(container: Any) -> Any:
    """A registry password never enters a hash kept in plaintext: compile adds the stack's keyed
    fingerprint of it (`auth_fingerprint`), which changes with it."""
    auth = container.get("registry_auth") if isinstance(container, Mapping) else None
    if not isinstance(auth, Mapping) or "password" not in auth:
        return container
    return {**container, "registry_auth": {k: v for k, v in auth.items() if k != "password"}}


def restart_inputs(service: Mapping[str, Any], group: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `group` (in `service`) that restart its replicas when they change."""
    out = {key: _norm(service.get(key)) for key in SERVICE_KEYS}
    out.update({key: _norm(group.get(key)) for key in GROUP_KEYS})
    out["container"] = _no_password(out["container"])
    return out


def group_generation(service: Mapping[str, Any], group: Mapping[str, Any]) -> str:
    """The group's generation: changes exactly when `restart_reasons` would list something."""
    raw = json.dumps(restart_inputs(service, group), sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def stamp_generations(service: dict[str, Any]) -> dict[str, Any]:
    """Set every group's `generation` from its final contents; returns `service` (changed in place).

    Call it once, on the definition as it will be registered: nothing may change a restart input
    afterwards.
    """
    for group in service["groups"]:
        group["generation"] = group_generation(service, group)
    return service


def restart_reasons(old_service: Mapping[str, Any], old_group: Mapping[str, Any],
                    new_service: Mapping[str, Any], new_group: Mapping[str, Any]) -> list[str]:
    """The restart inputs that differ, in a stable order (service keys first); empty: no restart."""
    before, after = restart_inputs(old_service, old_group), restart_inputs(new_service, new_group)
    return [key for key in (*SERVICE_KEYS, *GROUP_KEYS) if before[key] != after[key]]


def rolls(old_generation: str, new_generation: str) -> bool:
    """Whether the controller rolls a group whose registered generation went from old to new."""
    return old_generation != new_generation
