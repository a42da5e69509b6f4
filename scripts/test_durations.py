#!/usr/bin/env python3
"""Refresh tests/durations.json from pytest `--durations=N` output (the order tests/conftest.py runs them in).

    .venv/bin/python -m pytest -q -n 2 --durations=120 | tee run.log
    python3 scripts/test_durations.py run.log [more.log ...]

Setup, call and teardown of one test add up; with several logs, the larger figure wins (the order
only has to put the long tests first, and a busy run is the one that matters).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(setup|call|teardown)\s+(\S+::\S.*?)\s*$")
OUT = Path(__file__).resolve().parent.parent / "tests" / "durations.json"
FLOOR_S = 1.0  # shorter tests keep their file order


def parse(text: str) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            nodeid = re.sub(r"@[^\]@]*$", "", match[3])  # xdist's loadgroup suffix (tests/conftest.py)
            seconds[nodeid] = seconds.get(nodeid, 0.0) + float(match[1])
    return seconds


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    merged: dict[str, float] = {}
    for path in paths:
        for nodeid, secs in parse(Path(path).read_text(errors="replace")).items():
            merged[nodeid] = max(merged.get(nodeid, 0.0), secs)
    kept = {k: round(v, 1) for k, v in sorted(merged.items(), key=lambda kv: -kv[1]) if v >= FLOOR_S}
    OUT.write_text(json.dumps({"note": "measured by scripts/test_durations.py; only the order of tests depends on it",
                               "seconds": kept}, indent=1) + "\n")
    print(f"{len(kept)} tests over {FLOOR_S:g} s written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
