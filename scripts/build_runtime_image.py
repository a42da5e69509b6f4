"""Build the runtime image from the repository's Containerfile with Podman, from this checkout's
wheels (the SSH fleets' wheelhouse plus the Kubernetes scaler), and print its pinned reference.

    .venv/bin/python scripts/build_runtime_image.py --tag localhost/gpustack-iac-runtime:dev \\
        [--base docker.io/library/python:3.11-slim-bookworm]

Where no registry is reachable, make a base first: scripts/runtime_base_rootfs.sh.
Then `GPUSTACK_RUNTIME_IMAGE=<tag> gpustack-iac plan examples/kubernetes` pins the built digest.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpustack_iac.backends.kubernetes.image import KUBERNETES_REQUIREMENTS, pinned  # noqa: E402
from gpustack_iac.providers import wheelhouse  # noqa: E402


def build(tag: str, base: str | None, cache_dir: Path) -> str:
    python, machine = wheelhouse.local_platform()
    house = wheelhouse.build(cache_dir, python, machine, gateway=True)
    with tempfile.TemporaryDirectory(prefix="gpustack-image-") as tmp:
        context = Path(tmp)
        wheels = context / "wheelhouse"
        wheels.mkdir()
        for wheel in house.files():
            shutil.copy2(wheel, wheels)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheels),
                        *KUBERNETES_REQUIREMENTS], check=True)
        shutil.copy2(REPO / "containers" / "runtime" / "install.py", context / "install.py")
        argv = ["podman", "build", "-q", "-f", str(REPO / "Containerfile"), "-t", tag]
        if base:
            argv += ["--build-arg", f"BASE={base}"]
        subprocess.run([*argv, str(context)], check=True, stdout=subprocess.DEVNULL)
    return pinned(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="localhost/gpustack-iac-runtime:dev")
    parser.add_argument("--base", default=None, help="the BASE build argument (an image with Python 3.11)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "build" / "wheelhouse")
    args = parser.parse_args()
    print(build(args.tag, args.base, args.cache_dir))


if __name__ == "__main__":
    main()
