from __future__ import annotations

import importlib.util
import os

import pytest


def need_sdk(module: str) -> pytest.MarkDecorator:
    """Skip where the provider SDK is not installed, but never in CI: there a missing SDK must fail
    (the test extra installs them), so a graph test cannot pass by not running."""
    missing = importlib.util.find_spec(module) is None
    if missing and os.environ.get("CI"):
        raise RuntimeError(f"{module} is not installed; CI installs the provider SDKs (pip install -e '.[test]')")
    return pytest.mark.skipif(missing, reason=f"{module} not installed (pip install 'gpustack-iac[all]')")


# The Kubernetes gateway's runtime image must be pinned by digest for a plan to succeed
# (backends/kubernetes/image.py); graph tests name one rather than build it. The test that builds
# the image from the Containerfile (test_runtime_image.py) sets its own.
PINNED_TEST_IMAGE = "registry.invalid/gpustack-iac@sha256:" + "ab" * 32


@pytest.fixture(autouse=True)
def _pinned_runtime_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUSTACK_RUNTIME_IMAGE", PINNED_TEST_IMAGE)
