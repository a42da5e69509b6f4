"""Wheelhouses built at once for two stacks (two state roots) from the same checkout: pip builds
this package in its source tree, so the builds must not overlap there."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpustack_iac.providers import wheelhouse

pytestmark = pytest.mark.slow


def test_two_stacks_build_their_wheelhouses_at_once(tmp_path: Path) -> None:
    python, machine = wheelhouse.local_platform()
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(lambda d: wheelhouse.build(tmp_path / d, python, machine), ["stack-a", "stack-b"]))
    for house in built:
        names = [p.name for p in house.files()]
        assert any(n.startswith("gpustack_iac-") for n in names), names
