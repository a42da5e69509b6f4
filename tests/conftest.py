"""Suite-wide hooks: run the longest tests first, one at a time per xdist worker.

With pytest-xdist's `--dist load`, tests go to the workers in collection order, and by default each
worker is first handed a contiguous quarter of its share. Collected in file order, the suite ended on
one worker still running a five-minute end-to-end test while the other sat idle. So:

- the collection is sorted longest first (measured durations in tests/durations.json, refreshed with
  scripts/test_durations.py; an unmeasured `slow` test counts as long), and a module whose tests share
  a module- or class-scoped fixture moves as one block, so that fixture is not rebuilt;
- `--maxschedchunk` defaults to 1: a worker is handed a test or two at a time, as it frees up, rather
  than the first quarter of the sorted list (which would be every long test on one worker).

Only the order changes: every test still runs, with its own assertions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
UNMEASURED_SLOW_S = 30.0  # a `slow` test nobody measured yet: by the marker's definition, over ~20 s
_SHARED_SCOPES = ("class", "module", "package")


def pytest_configure(config: pytest.Config) -> None:
    # Only when xdist is loaded (not with `-p no:xdist`) and the caller did not choose a chunk size.
    if hasattr(config.option, "maxschedchunk") and config.option.maxschedchunk is None:
        config.option.maxschedchunk = 1


def _measured() -> dict[str, float]:
    try:
        data = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.get("seconds", {}).items()}


def expected_seconds(item: pytest.Item, measured: dict[str, float]) -> float:
    if item.nodeid in measured:
        return measured[item.nodeid]
    # A parametrised test not measured under this id: its siblings' figure is the best guess.
    base = item.nodeid.split("[", 1)[0]
    if base in measured:
        return measured[base]
    return UNMEASURED_SLOW_S if item.get_closest_marker("slow") else 0.0


def _shares_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in _SHARED_SCOPES for defs in info.name2fixturedefs.values())


def _block(item: pytest.Item) -> str:
    """What moves as one unit: the module when its tests share a wider-scoped fixture, else the test."""
    return item.nodeid.split("::", 1)[0] if _shares_fixture(item) else item.nodeid


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    measured = _measured()
    blocks: dict[str, float] = {}
    for item in items:
        key = _block(item)
        blocks[key] = blocks.get(key, 0.0) + expected_seconds(item, measured)
    # sorted() is stable: within a block, and among the many short tests, file order is kept.
    items[:] = sorted(items, key=lambda item: -blocks[_block(item)])
