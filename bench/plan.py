"""Time `plan` and a no-op `up` of the embedded engine next to `terraform plan`, same resource counts.

    .venv/bin/python bench/plan.py [--counts 100,1000] [--repeat 3]

The embedded engine manages N File resources (real files in a temporary directory); terraform
manages N `terraform_data` resources (built in, so `terraform init` downloads nothing). Both
refresh before planning, as they do by default. The first apply of each (setup) is timed once and
reported on its own; the repeated runs of both tools are interleaved (the machine may be shared) and
reported as best and median.
Prints a table; asserts nothing. Says so when terraform is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gpustack_iac.engine.embedded.engine import EmbeddedEngine
from gpustack_iac.engine.state import StateStore
from gpustack_iac.providers.file import File

TERRAFORM = shutil.which("terraform") or ("/usr/local/bin/terraform" if Path("/usr/local/bin/terraform").exists() else None)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Embedded:
    """N File resources applied once (untimed); then `plan` and no-op `up` can be timed."""

    def __init__(self, count: int, work: Path) -> None:
        files = work / "files"
        self.engine = EmbeddedEngine("bench", "dev", StateStore(work / "state", "bench", "dev", passphrase="bench"))

        def program() -> None:
            for i in range(count):
                File(f"f{i}", path=str(files / f"{i}.txt"), content=f"content {i}\n")

        self.program = program
        started = time.perf_counter()
        setup = self.engine.up(program)
        self.first_up = time.perf_counter() - started
        if not setup.ok:
            raise SystemExit(f"setup failed: {[r.error for r in setup.results if not r.ok]}")

    def plan(self) -> None:
        if self.engine.preview(self.program).has_changes:
            raise SystemExit("the bench program should be unchanged")

    def noop_up(self) -> None:
        if self.engine.up(self.program).results:
            raise SystemExit("a no-op up applied something")


class Terraform:
    """N terraform_data resources applied once (untimed); then `plan` and no-op `apply` can be timed."""

    def __init__(self, terraform: str, count: int, work: Path) -> None:
        self.terraform = terraform
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        (work / "main.tf").write_text(
            f'resource "terraform_data" "r" {{\n  count = {count}\n  input = "content ${{count.index}}"\n}}\n'
        )
        self.env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        self._tf("init")
        started = time.perf_counter()
        self._tf("apply", "-auto-approve")
        self.first_apply = time.perf_counter() - started

    def _tf(self, *args: str) -> None:
        subprocess.run([self.terraform, *args, "-input=false", "-no-color"], cwd=self.work, env=self.env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def plan(self) -> None:
        self._tf("plan")

    def noop_apply(self) -> None:
        self._tf("apply", "-auto-approve")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if TERRAFORM is None:
        print("terraform not found (looked on PATH and at /usr/local/bin/terraform): peer figures skipped")
    header = ["resources", "embedded plan", "terraform plan", "embedded no-op up", "terraform no-op apply"]
    print("  ".join(f"{h:>21}" for h in header))
    first_runs: list[str] = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="gpustack-bench-") as tmp:
            emb = Embedded(count, Path(tmp) / "embedded")
            peer = Terraform(TERRAFORM, count, Path(tmp) / "terraform") if TERRAFORM else None
            times: dict[str, list[float]] = {h: [] for h in header[1:]}
            # Interleaved, so both tools see the same background load of a shared machine.
            for _ in range(args.repeat):
                times["embedded plan"].append(timed(emb.plan))
                if peer:
                    times["terraform plan"].append(timed(peer.plan))
                times["embedded no-op up"].append(timed(emb.noop_up))
                if peer:
                    times["terraform no-op apply"].append(timed(peer.noop_apply))
        cells = [f"{count:>21}"]
        for h in header[1:]:
            values = times[h]
            cells.append(f"{f'{min(values):.2f} s (median {statistics.median(values):.2f})' if values else 'n/a':>21}")
        print("  ".join(cells))
        peer_first = f"{peer.first_apply:.2f} s" if peer else "n/a"
        first_runs.append(f"{count:>21}  {f'{emb.first_up:.2f} s':>21}  {peer_first:>21}")
    print()
    print("  ".join(f"{h:>21}" for h in ["resources", "embedded first up", "terraform first apply"]))
    for line in first_runs:
        print(line)
    print(f"(plan / no-op: best and median of {args.repeat} interleaved runs; first up / apply: one run each, the "
          f"embedded engine writing and fsyncing real files; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          "both refresh before planning)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
