"""bench/autoscale.py runs end to end on a short trace and prints its table and verdicts.

Only the output's shape and internal consistency are checked: the figures themselves are the
benchmark's business (tests never judge performance).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_prints_every_trace_and_policy_with_verdicts() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "autoscale.py"), "--hours", "0.5", "--seed", "3"],
        capture_output=True, text=True, timeout=240, env=env, cwd=REPO,
    )
    assert proc.returncode in (0, 1), proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in {"steady", "diurnal", "spike"}:
            rows[(parts[0], parts[1])] = (float(parts[2]), float(parts[3]))
    for trace in ("steady", "diurnal", "spike"):
        for policy in ("ours", "plain", "oracle"):
            assert (trace, policy) in rows, proc.stdout
        # The oracle starts every replica in time, so it is never overloaded.
        assert rows[(trace, "oracle")][1] == 0
        # Every policy keeps at least the base replica for the whole trace (1800 s).
        assert all(rows[(trace, p)][0] >= 1800 for p in ("ours", "plain", "oracle"))
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(verdicts) == 7, proc.stdout
    assert (proc.returncode == 0) == all(v.startswith("PASS") for v in verdicts)
