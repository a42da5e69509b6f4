"""Plan-time placement: host facts from any backend decide whether a group can run at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack_iac.compile import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.hostcheck import PlannedHost
from gpustack_iac.runtime.controller.placement import HostFacts, HostGpu
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext

_GW = "type: gateway\nname: gw\nbackend: local\ndefault: true\n---\n"
_FLEET = "type: fleet\nname: f\nbackends: [local]\nnodes: 1\n---\n"
_GIB = 2**30


def _hosts() -> list[PlannedHost]:
    a100 = tuple(HostGpu(i, "NVIDIA A100-SXM4-80GB", "nvidia", 80 * _GIB) for i in range(2))
    return [
        PlannedHost("cpu-0", HostFacts("cpu-0", 8, 32 * _GIB, 500 * _GIB), {"backend": "local"}),
        PlannedHost("gpu-0", HostFacts("gpu-0", 32, 256 * _GIB, 500 * _GIB, a100), {"backend": "local"}),
    ]


def _compile(service: str, tmp_path: Path) -> None:
    spec = load_text(_GW + _FLEET + service, file=str(tmp_path / "s.gpustack.yml"), env={})
    compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path), hosts=_hosts())


def _service(gpu: str) -> str:
    return f"type: service\nname: llm\nport: 80\ncommands: [x]\nresources:\n  memory: 1GB..\n  disk: 1GB..\n  gpu: {gpu}\n"


def test_a_group_some_host_can_run_plans(tmp_path: Path) -> None:
    _compile(_service("A100:2"), tmp_path)


def test_no_host_can_run_it_names_group_request_and_every_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _compile(_service("H100"), tmp_path)
    [diag] = caught.value.diagnostics
    assert diag.path == "resources" and diag.line > 0
    assert diag.message.startswith("service llm group default: no host can run a replica: ")
    assert "cpu-0: needs GPU H100:1" in diag.message and "host has no GPUs" in diag.message
    assert "gpu-0: needs GPU H100:1" in diag.message and "NVIDIA A100-SXM4-80GB 80.0GiB" in diag.message


def test_a_gpu_count_above_16_hints_at_memory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _compile(_service("A100:80"), tmp_path)
    assert "did you mean 80GB of GPU memory, A100:80GB?" in caught.value.diagnostics[0].message


def test_without_host_facts_nothing_is_checked(tmp_path: Path) -> None:
    spec = load_text(_GW + _FLEET + _service("H100"), file=str(tmp_path / "s.gpustack.yml"), env={})
    compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path), hosts=[])


_SSH_FLEET = ("type: fleet\nname: gpus\nssh_config:\n  user: u\n  identity_file: /dev/null\n"
              "  hosts:\n    - hostname: 198.18.0.10\n---\n")
_IMAGE_SERVICE = "type: service\nname: web\nport: 8000\nimage: busybox\nresources: {cpu: 1.., memory: 64MB.., disk: 0GB..}\n"


@pytest.mark.parametrize("engine", [False, True])
def test_an_image_group_on_ssh_hosts_needs_an_engine_on_one_of_them(tmp_path: Path, engine: bool) -> None:
    """An SSH host's probed facts say whether an engine answers there; this machine's engine is beside the point."""
    host = PlannedHost("gpus-198-18-0-10", HostFacts("gpus-198-18-0-10", 8, 32 * _GIB, 500 * _GIB, docker=engine), {})
    spec = load_text(_GW + _SSH_FLEET + _IMAGE_SERVICE, file=str(tmp_path / "s.gpustack.yml"), env={})
    compile_at = lambda: compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path), hosts=[host])  # noqa: E731
    if engine:
        compile_at()
        return
    with pytest.raises(ConfigError) as caught:
        compile_at()
    assert "image busybox needs Docker, the host has none" in str(caught.value)
