"""The shipped examples: all of them validate together, and the local example's app really serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gpustack_iac.spec.loader import load_paths
from tests.support.ports import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REQUIRED = ("local", "llm-replica-groups", "router", "ssh-fleet", "aws", "kubernetes")


def test_every_example_directory_exists_and_validates_alone() -> None:
    for name in REQUIRED:
        spec = load_paths([EXAMPLES / name], {})
        assert spec.documents(), name


def test_all_examples_validate_together() -> None:
    spec = load_paths([EXAMPLES], {})
    assert {s.name for s in spec.services} >= {"hello", "llm", "chat-small", "chat-large", "mistral", "embeddings"}
    assert spec.default_gateway is not None and spec.default_gateway.backend == "local"


def test_local_example_has_the_required_shape() -> None:
    spec = load_paths([EXAMPLES / "local"], {})
    (fleet,) = spec.fleets
    assert fleet.backends == ["local"] and fleet.nodes is not None and fleet.nodes.format() == "2"
    (gateway,) = spec.gateways
    assert gateway.backend == "local" and gateway.default
    (hello,) = spec.services
    assert hello.name == "hello"
    groups = {g.name: g for g in hello.groups}
    assert {n: g.replicas.format() for n, g in groups.items()} == {"base": "2", "burst": "1"}
    for g in groups.values():
        assert g.commands == ["python3 app.py"]
        assert g.resources is not None and g.resources.to_runtime()["memory_bytes"]["min"] <= 64 * 1024**2


def test_llm_example_is_the_discussion_example() -> None:
    (llm,) = load_paths([EXAMPLES / "llm-replica-groups"], {}).services
    gpus = {g.name: g.resources.gpu.names for g in llm.groups if g.resources and g.resources.gpu}
    assert gpus == {"l40s-gpu": ("L40S",), "a100-gpu": ("A100",)}


def test_router_example_routes_over_two_services() -> None:
    spec = load_paths([EXAMPLES / "router"], {})
    (router,) = spec.routers
    assert len(spec.services) == 2 and {m.service for m in router.members} == {s.name for s in spec.services}


def _get(url: str, deadline: float) -> dict[str, object]:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except OSError as exc:  # not listening yet
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {last}")


def test_local_app_answers_with_group_replica_and_pid(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "GPUSTACK_GROUP": "base", "GPUSTACK_REPLICA_ID": "hello-base-0"}
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "local" / "app.py")], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        for path in ("/", "/health"):
            body = _get(f"http://127.0.0.1:{port}{path}", deadline)
            assert body == {"group": "base", "replica": "hello-base-0", "pid": proc.pid}
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
        assert info.value.code == 404
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
