"""compile: what the local backend honours, rejects (at plan, naming property and backend) or ignores (a warning)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack_iac.compile import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.runtime.agent.hostinfo import detect_docker
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext

BASE = """
type: fleet
name: local
backends: [local]
nodes: 1
---
type: gateway
name: gw
backend: local
default: true
---
"""


def _compile(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    spec = load_text(BASE + text, file=str(tmp_path / "stack.gpustack.yml"), env={})
    return compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path))


def test_image_without_docker_fails_at_plan_naming_property_and_backend(tmp_path: Path) -> None:
    if detect_docker():
        pytest.skip("a Docker daemon answers here")
    with pytest.raises(ConfigError) as caught:
        _compile("type: service\nname: web\nport: 80\nimage: nginx\n", tmp_path)
    [diag] = caught.value.diagnostics
    assert diag.path == "image" and "local backend" in diag.message and "Docker" in diag.message
    image_line = (BASE + "type: service").count("\n") + 4  # the line of `image:` in the file
    assert diag.file.endswith("stack.gpustack.yml") and (diag.line, diag.column) == (image_line, 1)


def test_unimplemented_backend_is_named(tmp_path: Path) -> None:
    text = "type: fleet\nname: cloud\nbackends: [vultr]\nregions: [ewr]\nnodes: 1\n"
    with pytest.raises(ConfigError) as caught:
        _compile(text, tmp_path)
    [diag] = [d for d in caught.value.diagnostics if "backend vultr is not implemented yet" in d.message]
    assert diag.line == (BASE + text).splitlines().index("backends: [vultr]") + 1


def test_ignored_properties_are_warnings(tmp_path: Path) -> None:
    text = ("type: service\nname: web\nport: 80\ncommands: [python3 app.py]\nregions: [eu-west-1]\n"
            "rate_limits: [{rps: 5}]\nresources: {cpu: 1.., memory: 64MB.., shm_size: 1GB}\n")
    warnings = _compile(text, tmp_path).warnings
    assert "service web group default: regions is ignored by the local backend" in warnings
    assert "service web: rate_limits is ignored by the local backend" in warnings
    assert "service web: resources.shm_size is ignored by the local backend" in warnings


def test_setup_runs_before_the_commands_and_working_dir_is_the_config_dir(tmp_path: Path) -> None:
    text = "type: service\nname: web\nport: 80\nsetup: [pip install -r req.txt]\ncommands: [python3 app.py]\n"
    [group] = _compile(text, tmp_path).definitions["web"]["groups"]
    assert group["commands"] == ["pip install -r req.txt", "python3 app.py"]
    assert group["working_dir"] == str(tmp_path.resolve())


def test_a_service_needs_a_gateway(tmp_path: Path) -> None:
    spec = load_text("type: service\nname: web\nport: 80\ncommands: [x]\n", file=str(tmp_path / "s.yml"), env={})
    with pytest.raises(ConfigError) as caught:
        compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path))
    assert "no gateway" in caught.value.diagnostics[0].message
