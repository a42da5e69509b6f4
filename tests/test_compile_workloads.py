"""compile: tasks, volumes and dev environments on the local backend, and what it rejects at plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack_iac.compile import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext

BASE = """
type: fleet
name: local
backends: [local]
nodes: 2
---
type: volume
name: data
backend: local
host: local-1
size: 1GB
---
"""


def _compile(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    spec = load_text(BASE + text, file=str(tmp_path / "stack.gpustack.yml"), env={})
    return compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path))


def _problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _compile(text, tmp_path)
    return [f"{d.path}: {d.message}" for d in caught.value.diagnostics]


def test_task_definition_carries_nodes_retry_and_volume(tmp_path: Path) -> None:
    compiled = _compile("type: task\nname: t\ncommands: [echo hi]\nsetup: [echo setup]\nvolumes: [data:/data, /tmp/x:/x]\n"
                        "retry: {on_events: [error], duration: 10m}\nmax_duration: 1h\n", tmp_path)
    task = compiled.tasks["t"]
    assert task["commands"] == ["echo setup", "echo hi"]
    assert task["retry"] == {"on_events": ["error"], "duration": 600}
    assert task["max_duration"] == 3600
    assert task["only_hosts"] == ["local-1"]
    assert task["mounts"] == [{"source": str(tmp_path / "local" / "p" / "dev" / "volumes" / "data"), "target": "/data", "name": "data"},
                              {"source": "/tmp/x", "target": "/x", "name": ""}]
    specs = compiled.component_specs()
    assert ("volume", "data") in specs and ("task", "t") in specs


def test_unknown_volume_and_multi_node_host_volume_are_rejected(tmp_path: Path) -> None:
    problems = _problems("type: task\nname: t\nnodes: 2\ncommands: [echo hi]\nvolumes: [data:/data, nope:/nope]\n", tmp_path)
    assert any("volume nope is not configured" in p for p in problems)
    assert any("nodes: 2 needs distinct hosts" in p for p in problems)


def test_volume_on_an_unknown_host_or_cloud_backend_is_rejected(tmp_path: Path) -> None:
    problems = _problems("type: volume\nname: v2\nbackend: local\nhost: elsewhere-0\nsize: 1GB\n---\n"
                         "type: volume\nname: v3\nbackend: aws\nregion: us-east-1\nsize: 1GB\n", tmp_path)
    assert any("host elsewhere-0 is not a fleet host" in p for p in problems)
    assert any("backend aws is not implemented yet" in p for p in problems)


def test_service_volumes_pin_the_group_to_the_volume_host(tmp_path: Path) -> None:
    text = ("type: gateway\nname: gw\nbackend: local\ndefault: true\n---\n"
            "type: service\nname: web\nport: 80\ncommands: [python3 app.py]\nvolumes: [data:/data]\n")
    with_volume = _compile(text, tmp_path).definitions["web"]["groups"][0]
    without = _compile(text.replace("volumes: [data:/data]\n", ""), tmp_path).definitions["web"]["groups"][0]
    assert with_volume["hosts"] == ["local-1"] and with_volume["mounts"][0]["target"] == "/data"
    assert with_volume["generation"] != without["generation"]


def test_dev_environment_with_image_is_rejected_on_the_local_backend(tmp_path: Path) -> None:
    problems = _problems("type: dev-environment\nname: d\nide: vscode\nimage: ubuntu\n", tmp_path)
    assert any(p.startswith("image:") and "process group" in p for p in problems)


def test_properties_a_host_process_ignores_are_warned(tmp_path: Path) -> None:
    warnings = _compile("type: task\nname: t\ncommands: [echo hi]\npython: '3.11'\n---\n"
                        "type: dev-environment\nname: d\nide: cursor\nversion: '1.2'\n", tmp_path).warnings
    assert "task t: python is ignored by the local backend" in warnings
    assert "dev environment d: version is ignored; the IDE installs its own server over SSH" in warnings


SSH_FLEET = """
type: fleet
name: gpus
ssh_config:
  identity_file: /nonexistent/key
  hosts: [198.18.0.10, {hostname: 198.18.0.11, internal_ip: 10.0.0.11}]
---
"""


def _compile_ssh(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    spec = load_text(SSH_FLEET + text, file=str(tmp_path / "stack.gpustack.yml"), env={})
    return compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path), hosts=[])


def test_task_on_an_ssh_fleet_compiles_with_a_remote_working_dir(tmp_path: Path) -> None:
    compiled = _compile_ssh("type: task\nname: t\nbackends: [ssh]\nnodes: 2\ncommands: [echo hi]\n", tmp_path)
    assert compiled.tasks["t"]["remote_working_dir"] is None  # the configuration's directory is on this machine
    compiled = _compile_ssh("type: task\nname: t\nworking_dir: /srv/job\ncommands: [echo hi]\n", tmp_path)
    assert compiled.tasks["t"]["remote_working_dir"] == "/srv/job"


def test_dev_environment_on_an_ssh_fleet_compiles(tmp_path: Path) -> None:
    compiled = _compile_ssh("type: dev-environment\nname: box\nide: vscode\nbackends: [ssh]\n", tmp_path)
    assert ("dev-environment", "box") in compiled.component_specs()


def test_volume_on_an_ssh_host_lives_in_the_agent_users_home(tmp_path: Path) -> None:
    compiled = _compile_ssh("type: volume\nname: data\nbackend: ssh\nhost: 198.18.0.11\nsize: 1GB\n---\n"
                            "type: task\nname: t\ncommands: [echo hi]\nvolumes: [data:/data]\n", tmp_path)
    task = compiled.tasks["t"]
    assert task["only_hosts"] == ["gpus-198-18-0-11"]  # the hostname names the fleet's host
    assert task["mounts"] == [{"source": "~/.gpustack-volumes/p-dev-data", "target": "/data", "name": "data"}]


def test_agent_expands_home_in_mount_sources() -> None:
    import os  # noqa: PLC0415

    from gpustack_iac.runtime.agent.spec import host_path  # noqa: PLC0415

    assert host_path("~/.gpustack-volumes/x") == os.path.expanduser("~/.gpustack-volumes/x")
    assert host_path("/srv/x") == "/srv/x"


def test_host_names_of_a_fleet_with_no_minimum_are_counted_as_the_fleet_counts_them() -> None:
    # `nodes: ..3` has no minimum: the names come from the Fleet component's own count (one agent).
    from gpustack_iac.compile_workloads import host_names
    from gpustack_iac.spec.loader import load_text

    spec = load_text("type: fleet\nname: f\nbackends: [local]\nnodes: ..3\n")
    assert host_names(spec) == ["f-0"]
