"""Runs once inside the image build (Containerfile): a venv without pip at /opt/gpustack/venv, the
wheelhouse unpacked into it with pypa's `installer` (run from its own wheel, no index), the
runtime's user, and its state directory. Python only, so the base needs no shell or package tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

WHEELS = Path("/opt/gpustack/wheelhouse")
VENV = Path("/opt/gpustack/venv")
STATE = Path("/var/lib/gpustack")
UID = 10001

UNPACK = """
import sys
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
import sysconfig
scheme = sysconfig.get_paths()
dest = SchemeDictionaryDestination(scheme, interpreter=sys.executable, script_kind="posix", bytecode_optimization_levels=())
for wheel in sys.argv[1:]:
    with WheelFile.open(wheel) as source:
        install(source, dest, {"INSTALLER": b"gpustack-iac-image"})
"""


def main() -> None:
    import venv

    venv.create(VENV, with_pip=False, symlinks=True)
    wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
    tool = next(w for w in wheels if Path(w).name.startswith("installer-"))
    env = {**os.environ, "PYTHONPATH": tool}
    subprocess.run([str(VENV / "bin" / "python"), "-c", UNPACK, *wheels], check=True, env=env)
    with open("/etc/passwd", "a+") as f:
        f.seek(0)
        if "\ngpustack:" not in "\n" + f.read():
            f.write(f"gpustack:x:{UID}:{UID}:gpustack runtime:{STATE}:/sbin/nologin\n")
    with open("/etc/group", "a+") as f:
        f.seek(0)
        if "\ngpustack:" not in "\n" + f.read():
            f.write(f"gpustack:x:{UID}:\n")
    STATE.mkdir(parents=True, exist_ok=True)
    os.chown(STATE, UID, UID)
    shutil.rmtree(WHEELS)
    print(f"installed {len(wheels)} wheels into {VENV} with Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
