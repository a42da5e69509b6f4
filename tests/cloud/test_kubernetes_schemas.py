"""Every Kubernetes manifest the plan declares is valid against the Kubernetes OpenAPI schemas of
three Kubernetes versions (kubernetes-validate, strict: an unknown field is an error, so a typo in
a securityContext cannot be silently dropped by the API server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import SECRET_SIG, Graph, run, write
from tests.cloud.test_kubernetes_graph import GATEWAY, SERVICE

pytestmark = need_sdk("pulumi_kubernetes")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
VERSIONS = ("1.29", "1.31", "1.33")


def _plain(value: Any) -> Any:
    """Inputs as the API server would get them: secrets unwrapped, empty values dropped."""
    if isinstance(value, dict):
        if SECRET_SIG in value.values():
            return _plain(value["value"])
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _manifests(graph: Graph) -> list[dict[str, Any]]:
    out = [_plain(r.inputs) for r in graph.resources if r.type.startswith("kubernetes:") and "apiVersion" in r.inputs]
    assert {m["kind"] for m in out} >= {"Namespace", "Deployment", "Service", "Secret", "ServiceAccount", "Role",
                                        "RoleBinding", "ConfigMap", "PersistentVolumeClaim"}
    return out


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUSTACK_RUNTIME_IMAGE", "registry.invalid/gpustack-iac@sha256:" + "ab" * 32)
    try:
        tmp = tmp_path_factory.mktemp("k8s")
        found = _manifests(run(EXAMPLE, tmp / "example"))
        (tmp / "groups").mkdir()
        return found + _manifests(run(write(tmp / "groups", {"s.gpustack.yml": SERVICE, "g.gpustack.yml": GATEWAY}), tmp))
    finally:
        mp.undo()


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_are_schema_valid(manifests: list[dict[str, Any]], version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate") if not _in_ci() else __import__("kubernetes_validate")
    problems = []
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{manifest['kind']} {manifest['metadata'].get('name')}: {exc.message} at {list(exc.path)}")
    assert not problems, "\n".join(problems)


def _in_ci() -> bool:
    import os

    return bool(os.environ.get("CI"))
