from __future__ import annotations

import os
from typing import Iterator

import pytest

from gpustack_iac.providers.runtime_bundle import CACHE_ENV
from tests.support.runtime_cache import seed


@pytest.fixture(scope="session", autouse=True)
def _cloud_runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Planning a cloud stack builds the pinned runtime (wheels downloaded for the image's Python):
    tests plan against a seeded cache instead (tests/support/runtime_cache.py). Set in os.environ so
    the CLI in a subprocess sees it too."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(seed(tmp_path_factory.mktemp("cloud-runtime")))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before
