"""Remote state's cost per step: `plan` and `up` of a 200-resource stack with file, S3 (moto) and PostgreSQL state.

    .venv/bin/python bench/state.py [--count 200] [--repeat 2]

The stack is N File resources (real files in a temporary directory), applied with the embedded engine
one step at a time (parallel 1, so every step pays its own checkpoint write) and 8 at a time (the
default, where parallel steps share writes). File state appends each step to its journal; remote
state uploads the whole checkpoint after each step, as Pulumi's DIY backend does. moto's S3 server
and a throw-away PostgreSQL cluster are started on loopback (tests/support/standins.py). The peer
is file state in the same run; the runs of the stores are interleaved (the machine may be shared).
Prints a table; asserts nothing. Says so when a stand-in is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpustack_iac.engine.embedded.engine import EmbeddedEngine  # noqa: E402
from gpustack_iac.engine.stores import open_store  # noqa: E402
from gpustack_iac.providers.file import File  # noqa: E402


def _program(count: int, files: Path) -> Callable[[], None]:
    def program() -> None:
        for i in range(count):
            File(f"f{i}", path=str(files / f"{i}.txt"), content=f"content {i}\n")

    return program


def _run(url: str, count: int, parallel: int, work: Path) -> tuple[float, float, float]:
    """Seconds for the first `up` (N creates), a `plan` of the result, and `destroy` (N deletes)."""
    engine = EmbeddedEngine("bench", "dev", open_store(url, "bench", "dev", passphrase="bench"), parallel=parallel)
    program = _program(count, work / f"files-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    assert engine.up(program, refresh=False).ok
    up = time.perf_counter() - started
    started = time.perf_counter()
    engine.preview(program, refresh=False)
    plan = time.perf_counter() - started
    started = time.perf_counter()
    assert engine.destroy().ok
    return up, plan, time.perf_counter() - started


@contextlib.contextmanager
def _stores(work: Path) -> Iterator[dict[str, Callable[[], str]]]:
    from tests.support import standins

    stores: dict[str, Callable[[], str]] = {"file": lambda: str(work / f"state-{uuid.uuid4().hex[:6]}")}
    with contextlib.ExitStack() as stack:
        for name, start in (("s3 (moto)", standins.moto_s3), ("postgres", standins.postgres)):
            try:
                running = stack.enter_context(start(work))
            except BaseException as exc:  # pytest.skip outside pytest raises its own exception type
                print(f"{name}: not measured ({exc})")
                continue
            os.environ.update(running.env)
            stores[name] = (lambda r=running: r.url(f"bench-{uuid.uuid4().hex[:10]}"))
        yield stores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp, _stores(Path(tmp)) as stores:
        results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for _ in range(args.repeat):
            for parallel in (1, 8):
                for name, url in stores.items():
                    results.setdefault((name, parallel), []).append(_run(url(), args.count, parallel, Path(tmp)))
        print(f"\n{args.count} resources; median of {args.repeat} runs (seconds; per step in ms)")
        print(f"{'store':<12} {'parallel':>8} {'up':>8} {'plan':>8} {'destroy':>8} {'up/step':>9} {'vs file':>9}")
        for (name, parallel), runs in results.items():
            up, plan, destroy = (statistics.median(r[i] for r in runs) for i in range(3))
            base = statistics.median(r[0] for r in results[("file", parallel)])
            extra = (up - base) / args.count * 1000
            print(f"{name:<12} {parallel:>8} {up:>8.2f} {plan:>8.2f} {destroy:>8.2f} "
                  f"{up / args.count * 1000:>9.1f} {extra:>+9.1f}")


if __name__ == "__main__":
    main()
