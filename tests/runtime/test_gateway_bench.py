"""bench/gateway.py --quick runs end to end and prints its comparison table with PASS/FAIL verdicts.

Only the output's shape is checked: the figures are the benchmark's business (tests never judge
performance, and this machine is shared).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERS = ("nginx, 1 worker", "HAProxy, 1 thread", "Python gateway")


@pytest.mark.slow
def test_quick_bench_prints_the_three_data_planes_and_verdicts() -> None:
    missing = [tool for tool in ("nginx", "haproxy", "wrk") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} missing: .ci/run installs them")
        pytest.skip(f"{missing} not installed")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gateway.py"), "--quick"],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "load average" in out
    for peer in PEERS:
        assert any(line.strip().startswith(peer) and len(line.split()) >= 8 for line in out.splitlines()), out
    verdicts = [line.split()[0] for line in out.splitlines() if line.strip().startswith(("PASS", "FAIL"))]
    assert len(verdicts) >= 2 * 5, out  # five targets for each of the two data planes measured against nginx
    assert "per thread" in out and "unmeasured" in out
