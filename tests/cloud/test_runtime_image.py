"""The runtime image, built from the repository's Containerfile with Podman (from a base imported
from this machine's Python: no registry), started as the Kubernetes pod runs it (non-root,
read-only root filesystem, state on a volume), and pinned by digest in `plan examples/kubernetes`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import run

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, need_sdk("pulumi_kubernetes")]
SCHEDULING_UNIT = "podman"  # one worker at a time uses Podman (tests/conftest.py)
TAG = f"localhost/gpustack-iac-runtime-test:{os.getpid()}"
BASE = f"localhost/gpustack-runtime-base-test:{os.getpid()}"


def _podman() -> str:
    podman = shutil.which("podman")
    if podman is None or not Path("/usr/bin/python3.11").exists():
        if os.environ.get("CI"):
            raise RuntimeError("CI builds the runtime image with Podman from Debian's python3.11 (.ci/run installs them)")
        pytest.skip("podman or /usr/bin/python3.11 missing")
    return podman


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    podman = _podman()
    cache = tmp_path_factory.mktemp("wheelhouse")
    try:
        subprocess.run([str(REPO / "scripts" / "runtime_base_rootfs.sh"), BASE], check=True, timeout=300, capture_output=True)
        built = subprocess.run([sys.executable, str(REPO / "scripts" / "build_runtime_image.py"), "--tag", TAG, "--base", BASE,
                                "--cache-dir", str(cache)], check=True, timeout=600, capture_output=True, text=True)
        yield built.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([podman, "rmi", "-f", TAG, BASE], capture_output=True, timeout=120)


def test_plan_pins_the_built_image_by_digest(image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, digest = image.split("@")
    assert name == TAG and digest.startswith("sha256:") and len(digest) == 71
    monkeypatch.setenv("GPUSTACK_RUNTIME_IMAGE", TAG)  # a tag: pinned to what the local store has
    graph = run(REPO / "examples" / "kubernetes", tmp_path)
    gateway = graph.one("kubernetes:apps/v1:Deployment", "k8s-gateway-gateway").inputs
    assert gateway["spec"]["template"]["spec"]["containers"][0]["image"] == image


def test_the_image_runs_the_gateway_as_the_pod_does(image: str, tmp_path: Path) -> None:
    from gpustack_iac.backends.kubernetes.resources import COPY_TOKENS, TOKENS

    podman = _podman()
    secrets, tokens, state = tmp_path / "secrets", tmp_path / "tokens", tmp_path / "state"
    for d in (secrets, tokens, state):
        d.mkdir()
    for name in ("token", "admin-token"):
        # A Secret volume with fsGroup: root's files, group-readable by the pod's group.
        (secrets / name).write_text(f"{name}-value-for-the-test")
        os.chown(secrets / name, 0, 10001)
        (secrets / name).chmod(0o440)
    os.chown(tokens, 10001, 10001)
    os.chown(state, 10001, 10001)
    pod = [podman, "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "-v", f"{tokens}:{TOKENS}"]
    # The init container's copy, then the gateway container, as the Deployment declares them.
    subprocess.run([*pod, "-v", f"{secrets}:/etc/gpustack-secret:ro", image, "python", "-c", COPY_TOKENS],
                   check=True, capture_output=True, timeout=120)
    argv = [*pod[:3], "-d", *pod[3:], "-v", f"{state}:/var/lib/gpustack", image,
            "python", "-m", "gpustack_iac.runtime.gateway", "--host", "127.0.0.1", "--token-file", f"{TOKENS}/token",
            "--admin-token-file", f"{TOKENS}/admin-token", "--state-dir", "/var/lib/gpustack",
            "--port-file", "/var/lib/gpustack/ports.json"]
    container = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout.strip()
    try:
        deadline = time.monotonic() + 120
        while not (state / "ports.json").exists():
            alive = subprocess.run([podman, "container", "exists", container], timeout=60).returncode == 0
            assert alive and time.monotonic() < deadline, "the gateway in the image did not start"
            time.sleep(0.5)
        ports = json.loads((state / "ports.json").read_text())
        request = urllib.request.Request(f"http://127.0.0.1:{ports['port']}/services/none/")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code in (401, 404)  # the gateway in the image answers
        whoami = subprocess.run([podman, "exec", container, "python", "-c", "import os; print(os.getuid())"],
                                capture_output=True, text=True, timeout=60)
        assert whoami.stdout.strip() == "10001"
    finally:
        subprocess.run([podman, "rm", "-f", "-t", "5", container], capture_output=True, timeout=120)
