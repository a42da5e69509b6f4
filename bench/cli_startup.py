"""CLI start-up: `--help` and `validate examples/local`, wall time and modules imported.

Peers measured in the same run: a bare interpreter (`python -c pass`, the floor of any Python
CLI) and `python -c "import pulumi, aiohttp"` (what `--help` cost when click resolved every
lazy command). Target: `--help` and `validate` under 0.3 s. Usage:

    .venv/bin/python bench/cli_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNT = "import sys, atexit; atexit.register(lambda: print('MODULES', len(sys.modules), file=sys.stderr))\n"


def _run(args: list[str], rounds: int) -> tuple[float, int]:
    times, modules = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", COUNT + _script(args)], cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        modules = int(next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("MODULES")))
    return statistics.median(times), modules


def _script(args: list[str]) -> str:
    if args and args[0] == "-c":
        return args[1]
    return f"import sys\nsys.argv = ['gpustack-iac', *{args!r}]\nfrom gpustack_iac.cli import main\nmain()\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    rows = [
        ("peer: python -c pass", ["-c", "pass"]),
        ("peer: import pulumi, aiohttp", ["-c", "import pulumi, aiohttp"]),
        ("gpustack-iac --help", ["--help"]),
        ("gpustack-iac validate examples/local", ["validate", "examples/local"]),
    ]
    print(f"{'command':40} {'median wall':>12} {'modules':>8}   (median of {rounds})")
    for label, args in rows:
        seconds, modules = _run(args, rounds)
        print(f"{label:40} {seconds * 1000:10.0f}ms {modules:8d}")


if __name__ == "__main__":
    main()
