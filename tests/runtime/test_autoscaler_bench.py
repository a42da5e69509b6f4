"""bench/autoscale.py runs end to end on short traces and prints its table and verdicts.

Only the output's shape and internal consistency are checked: the figures themselves are the
benchmark's business (tests never judge performance).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACES = ("steady", "diurnal", "spike", "bursts", "near-target", "slow-start", "flash-crowd", "mmpp")


def test_bench_prints_every_trace_mode_and_policy_with_verdicts() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "autoscale.py"), "--hours", "0.5", "--seeds", "1"],
        capture_output=True, text=True, timeout=240, env=env, cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[0] in TRACES:
            rows[(parts[0], parts[1], parts[2])] = (float(parts[3]), float(parts[5]))
    for trace in TRACES:
        for mode in ("poisson", "steady-rate"):
            for policy in ("ours", "dstack", "skyserve"):
                cost, overload = rows[(trace, mode, policy)]
                assert cost >= 0 and overload >= 0
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(verdicts) == 2 * len(TRACES), proc.stdout
    assert (proc.returncode == 0) == all(v.startswith("PASS") for v in verdicts)
