"""Suite-wide hooks: run the longest tests first, and keep a module's shared fixture on one worker.

Collected in file order and handed out by pytest-xdist's `--dist load` (each worker first gets a
contiguous quarter of its share), the suite ended on one worker still running a five-minute end-to-end
test while the other sat idle. So, with `-n N` (README's `-n 2`):

- the collection is sorted longest first (measured durations in tests/durations.json, refreshed with
  scripts/test_durations.py; an unmeasured `slow` test counts as long);
- a module that declares a module- or class-scoped fixture (a booted rehearsal instance, a built
  image) moves as one block, and is scheduled as one unit, so one worker builds that fixture once;
- modules that name the same `SCHEDULING_UNIT` (a module-level string) are one block too: the
  container modules share one, so one worker starts one Podman service, builds the test images and
  starts the registry once (their session fixtures), instead of one of each per worker;
- the scheduler (xdist's LoadScopeScheduling, units as above, its reordering off) hands one unit at a
  time, in this order, to whichever worker has fewer than three tests queued.

Only the order and the placement change: every test still runs, with its own assertions.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from gpustack_iac.providers.runtime_bundle import CACHE_ENV
from gpustack_iac.providers.wheelhouse import CACHE_DIR_ENV
from tests.support.runtime_cache import seed

TESTS = Path(__file__).parent
DURATIONS = TESTS / "durations.json"
UNMEASURED_SLOW_S = 30.0  # a `slow` test nobody measured yet: by the marker's definition, over ~20 s
_SHARED_SCOPE = re.compile(r"""scope\s*=\s*["'](?:class|module|package)["']""")
_UNIT = re.compile(r"""^SCHEDULING_UNIT\s*=\s*["']([^"']+)["']""", re.MULTILINE)


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


@functools.cache
def block_modules() -> dict[str, str]:
    """Test modules (as node ids, relative to the repository) that move as one block → the block's
    name: the module's own, or the SCHEDULING_UNIT it names.

    Read from the source, not from collected items, because the xdist controller that schedules
    collects nothing; the workers sort with the same rule."""
    root = TESTS.parent
    blocks: dict[str, str] = {}
    for path in TESTS.rglob("test_*.py"):
        source, module = path.read_text(errors="replace"), str(path.relative_to(root))
        unit = _UNIT.search(source)
        if unit:
            blocks[module] = f"unit:{unit.group(1)}"
        elif _SHARED_SCOPE.search(source):
            blocks[module] = module
    return blocks


def block_of(nodeid: str) -> str:
    """What moves and is scheduled as one unit: the module's block when it has one, else the test."""
    module = nodeid.split("::", 1)[0]
    return block_modules().get(module, nodeid)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    measured = _measured()
    blocks: dict[str, float] = {}
    for item in items:
        key = block_of(item.nodeid)
        blocks[key] = blocks.get(key, 0.0) + expected_seconds(item, measured)
    # sorted() is stable: within a block, and among the many short tests, file order is kept.
    items[:] = sorted(items, key=lambda item: -blocks[block_of(item.nodeid)])


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a non-interactive shell (`... &` in a script, nohup)
    # inherits SIGINT ignored, and every CLI the tests start would inherit that too: the Ctrl-C tests
    # (`up`, `attach`) then wait for an interrupt that never comes. The processes under test get
    # SIGINT's default, as from a terminal, whatever shell started the suite.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and unused) with `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":
        return None  # an explicit --dist other than load: xdist's own
    from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415 - only when xdist runs

    class LongestFirst(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return block_of(nodeid)

    config.option.loadscopereorder = False  # keep the collection's longest-first order
    return LongestFirst(config, log)


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user cache (wheelhouse.user_cache: the SSH hosts' wheelhouse) of this run, never the
    tester's ~/.cache, and one for the whole run: the workers of `-n 2` share it (the basetemp's
    parent is the run's), so the wheelhouse is built once per run, as once per version for a user,
    not once per test stack. Set in os.environ so the CLI in a subprocess sees it too."""
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "user-cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(CACHE_DIR_ENV, str(cache))
        yield


@pytest.fixture(scope="session", autouse=True)
def _cloud_runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Planning a cloud stack builds the pinned runtime (wheels downloaded for the image's Python):
    tests plan against a seeded cache instead (tests/support/runtime_cache.py). Set in os.environ so
    the CLI in a subprocess sees it too."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(CACHE_ENV, str(seed(tmp_path_factory.mktemp("cloud-runtime"))))
        yield
