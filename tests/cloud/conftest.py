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
