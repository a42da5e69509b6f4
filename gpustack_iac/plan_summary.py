"""The configuration-level summary a reviewer reads above the resource steps.

Every component records its normalised configuration as its `spec` input, so the summary is a
comparison of the specs in the last checkpoint with the specs about to be deployed — whatever
backend and engine produced the resources. It lives beside compile, not in engine/: the engine
runs any program and knows no configuration. What restarts a replica group is the contract's rule
(contract/restart.py), the one the controller's generations come from.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from gpustack_iac.contract import scaling as scaling_defaults
from gpustack_iac.contract.restart import restart_reasons
from gpustack_iac.engine.model import ConfigChange

# Component type → configuration kind.
COMPONENT_KINDS = {"gpustack:index:Fleet": "fleet", "gpustack:index:Gateway": "gateway",
                   "gpustack:index:Service": "service", "gpustack:index:Router": "router",
                   "gpustack:index:Volume": "volume", "gpustack:index:Task": "task",
                   "gpustack:index:DevEnvironment": "dev-environment"}

Specs = Mapping[tuple[str, str], Mapping[str, Any]]  # (kind, name) → spec


def specs_from_resources(resources: Iterable[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) → spec of every component in a checkpoint's resources."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for res in resources:
        kind = COMPONENT_KINDS.get(res.type)
        spec = (res.inputs or {}).get("spec")
        if kind and isinstance(spec, dict):
            out[(kind, res.urn.rsplit("::", 1)[-1])] = spec
    return out


def _replicas(spec: Mapping[str, Any]) -> str:
    r = spec.get("replicas") or {}
    lo, hi = r.get("min"), r.get("max")
    return str(lo) if lo == hi else f"{lo}..{'' if hi is None else hi}"


def _groups(definition: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {g["name"]: g for g in definition.get("groups", [])}


def _describe_groups(definition: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} ×{_replicas(g)}" for name, g in _groups(definition).items())


def _service_changes(name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[ConfigChange]:
    if old is None and new is not None:
        scaled = [g for g in _groups(new).values() if not _replicas(g).isdigit()]
        rules = f"; scaling {_scaling_rules(scaled[0].get('scaling') or new.get('scaling'))}" if scaled else ""
        return [ConfigChange("service", name, f"new service: {_describe_groups(new)}{rules}")]
    if new is None and old is not None:
        return [ConfigChange("service", name, f"removed → {_describe_groups(old)} stop", disruptive=True)]
    assert old is not None and new is not None
    changes: list[ConfigChange] = []
    for key in ("auth", "model"):
        if old.get(key) != new.get(key):
            changes.append(ConfigChange("service", name, f"{key} {_short(old.get(key))} → {_short(new.get(key))} (in place)"))
    if old.get("scaling") != new.get("scaling"):
        changes.append(ConfigChange("service", name, f"scaling {_scaling(old.get('scaling'))} → {_scaling(new.get('scaling'))} (in place)"))
    old_groups, new_groups = _groups(old), _groups(new)
    for group in new_groups.keys() - old_groups.keys():
        changes.append(ConfigChange("group", f"{name}/{group}", f"new group {group} (replicas {_replicas(new_groups[group])})"))
    for group in old_groups.keys() - new_groups.keys():
        changes.append(ConfigChange("group", f"{name}/{group}", f"group {group} removed → {_replicas(old_groups[group])} replicas stop",
                                    disruptive=True))
    for group in sorted(old_groups.keys() & new_groups.keys(), key=list(new_groups).index):
        inherited = old_groups[group].get("scaling") == old.get("scaling") and new_groups[group].get("scaling") == new.get("scaling")
        restarting = restart_reasons(old, old_groups[group], new, new_groups[group])
        changes += _group_changes(f"{name}/{group}", old_groups[group], new_groups[group], restarting, inherited)
    return changes


def _group_changes(label: str, old: Mapping[str, Any], new: Mapping[str, Any], restarting: list[str],
                   scaling_inherited: bool) -> list[ConfigChange]:
    changes = []
    if old.get("replicas") != new.get("replicas"):
        changes.append(ConfigChange("group", label, f"replicas {_replicas(old)} → {_replicas(new)} (in place)"))
    fixed = _replicas(new).isdigit()
    # A group that inherits the service's scaling, or has a fixed count, adds nothing to the service's line.
    if old.get("scaling") != new.get("scaling") and not scaling_inherited and not fixed:
        changes.append(ConfigChange("group", label, f"scaling {_scaling(old.get('scaling'))} → {_scaling(new.get('scaling'))} (in place)"))
    if old.get("placement") != new.get("placement"):
        changes.append(ConfigChange("group", label, "placement changed → new replicas go to the matching hosts"))
    if restarting:
        what = " and ".join(restarting) if len(restarting) <= 2 else ", ".join(restarting[:-1]) + f" and {restarting[-1]}"
        count = _replicas(old)
        noun = "replica" if count == "1" else "replicas"
        changes.append(ConfigChange("group", label, f"{what} changed → rolling update, {count} {noun}", disruptive=True))
    return changes


def _scaling(scaling: Mapping[str, Any] | None) -> str:
    if not scaling:
        return "none"
    return f"{scaling.get('metric', 'rps')} target {scaling.get('target'):g}"


def _scaling_rules(scaling: Mapping[str, Any] | None) -> str:
    """The rules with their delays; says where the burst path overrides scale_up_delay."""
    if not scaling:
        return "none"
    metric = scaling.get("metric", "rps")
    text = _scaling(scaling)
    up, down = scaling.get("scale_up_delay"), scaling.get("scale_down_delay")
    if up is None or down is None:
        return text
    text += f", up after {up:g}s"
    if metric == "rps" and scaling.get("burst_sigmas", scaling_defaults.BURST_SIGMAS) is not None:
        text += " (bursts at once)"
    return text + f", down after {down:g}s"


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("name", value))
    return str(value)


def _simple_changes(kind: str, name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[ConfigChange]:
    if old is None and new is not None:
        return [ConfigChange(kind, name, f"new {kind}")]
    if new is None and old is not None:
        return [ConfigChange(kind, name, f"{kind} removed", disruptive=True)]
    assert old is not None and new is not None
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [ConfigChange(kind, name, f"{', '.join(changed)} changed")] if changed else []


def summarize(old: Specs, new: Specs) -> list[ConfigChange]:
    """Configuration-level changes, fleets first, then gateways, services (with groups), routers."""
    changes: list[ConfigChange] = []
    for kind in ("fleet", "volume", "gateway", "service", "router", "task", "dev-environment"):
        names = sorted({n for k, n in old if k == kind} | {n for k, n in new if k == kind})
        for name in names:
            before, after = old.get((kind, name)), new.get((kind, name))
            if kind == "service":
                changes += _service_changes(name, before, after)
            elif kind == "task":
                changes += _task_changes(name, before, after)
            elif kind == "volume":
                changes += _volume_changes(name, before, after)
            else:
                changes += _simple_changes(kind, name, before, after)
    return changes


def _task_changes(name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[ConfigChange]:
    if old is None and new is not None:
        schedule = new.get("schedule") or {}
        when = f", on schedule {' | '.join(schedule.get('expressions') or [])} (UTC)" if schedule else ""
        return [ConfigChange("task", name, f"new task: runs on {new.get('nodes', 1)} node(s){when}")]
    if new is None and old is not None:
        return [ConfigChange("task", name, "removed → stopped if still running, its logs deleted", disruptive=True)]
    assert old is not None and new is not None
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return []
    return [ConfigChange("task", name, f"{', '.join(changed)} changed → re-run (a run still going is stopped first)",
                         disruptive=True)]


def _volume_changes(name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[ConfigChange]:
    if old is None and new is not None:
        return [ConfigChange("volume", name, f"new volume on {new.get('host')} at {new.get('path')}")]
    if new is None and old is not None:
        fate = "its data is deleted (auto_cleanup)" if old.get("auto_cleanup") else "its data is kept (no auto_cleanup)"
        return [ConfigChange("volume", name, f"removed → {fate}", disruptive=bool(old.get("auto_cleanup")))]
    return _simple_changes("volume", name, old, new)
