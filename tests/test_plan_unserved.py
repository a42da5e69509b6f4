"""plan refuses a service no fleet can serve: before, it warned, and `up` then waited 5 minutes for a host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpustack_iac.compile import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.spec.loader import load_paths, load_text
from gpustack_iac.stacks.context import StackContext

REPO = Path(__file__).resolve().parents[1]
GATEWAY = "type: gateway\nname: gw\nbackend: local\ndefault: true\ncertificate: null\n"
FLEET = "type: fleet\nname: here\nbackends: [local]\nnodes: 1\n"
SERVICE = "type: service\nname: web\nport: 8000\ncommands: [python3 -m http.server $PORT]\n"


def _ctx(tmp_path: Path) -> StackContext:
    return StackContext(project="p", stack="dev", state_root=tmp_path, fingerprint_key=lambda: b"k" * 32)


def _compile(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    spec = load_text(text, file=str(tmp_path / "stack.gpustack.yml"), env={})
    return compile_spec(spec, _ctx(tmp_path), hosts=[])


def test_service_without_any_fleet_fails_plan_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _compile(GATEWAY + "---\n" + SERVICE, tmp_path)
    [diag] = caught.value.diagnostics
    assert "service web group default: no fleet can serve it" in diag.message
    assert "backends: [local]" in diag.message and diag.file.endswith("stack.gpustack.yml") and diag.line > 0


def test_fleet_in_another_document_or_file_serves(tmp_path: Path) -> None:
    _compile(GATEWAY + "---\n" + SERVICE + "---\n" + FLEET, tmp_path)  # another document of the same file
    (tmp_path / "a.gpustack.yml").write_text(GATEWAY + "---\n" + SERVICE)
    (tmp_path / "b.gpustack.yml").write_text(FLEET)  # another file of the stack
    compile_spec(load_paths([tmp_path], env={}), _ctx(tmp_path), hosts=[])


def test_cloud_group_without_a_fleet_of_its_backend_is_warned(tmp_path: Path) -> None:
    # A local fleet's agents never run an aws group's replicas: only an aws fleet's nodes do.
    text = (GATEWAY + "---\n" + FLEET + "---\n" + SERVICE
            + "replicas:\n  - name: cloud\n    backends: [aws]\n    image: nginx\n    resources: {gpu: A10G}\n")
    warnings = _compile(text, tmp_path).warnings
    assert any("service web group cloud: no aws fleet" in w for w in warnings), warnings


@pytest.mark.parametrize("example", ["router", "llm-replica-groups"])
def test_fleetless_examples_plan_with_a_fleet_beside_them(example: str, tmp_path: Path) -> None:
    # These examples hold only services (and a router): a gateway and fleet from another file serve them.
    folder = tmp_path / example
    shutil.copytree(REPO / "examples" / example, folder)
    (folder / "infra.gpustack.yml").write_text(GATEWAY + "---\n" + FLEET)
    try:
        compile_spec(load_paths([folder], env={}), _ctx(tmp_path), hosts=[])
    except ConfigError as exc:  # llm-replica-groups runs an image: refused where no Docker daemon answers
        assert not [d for d in exc.diagnostics if "no fleet" in d.message], exc
    (folder / "infra.gpustack.yml").write_text(GATEWAY)
    with pytest.raises(ConfigError, match="no fleet can serve"):
        compile_spec(load_paths([folder], env={}), _ctx(tmp_path), hosts=[])
