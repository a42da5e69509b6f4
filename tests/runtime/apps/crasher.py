"""A replica that fails at once (stdlib only): prints a line and exits with $CRASH_CODE (default 3)."""

from __future__ import annotations

import os
import sys

print(f"crasher pid {os.getpid()} exiting", file=sys.stderr, flush=True)
sys.exit(int(os.environ.get("CRASH_CODE", "3")))
