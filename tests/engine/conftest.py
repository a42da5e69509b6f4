"""Makes the helper modules of this folder importable by name, in tests and in the subprocesses they start.

Dynamic providers are pickled by reference to their module, so a helper provider must be importable
under the same name wherever the state is read back.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
