"""The runtime image the Kubernetes gateway runs: built from the repository's Containerfile, and
pinned by digest in the plan, so `up` deploys exactly the image that was reviewed.

The image is named by `GPUSTACK_RUNTIME_IMAGE` (default: this version's name). A reference with a
digest (`name@sha256:…`) is used as given; a name or tag is pinned to the digest Podman (or
Docker) has for it locally, and a plan refuses an image it cannot pin: it would deploy whatever
the tag points at on the day, or nothing (the default name is not published anywhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from gpustack_iac import __version__
from gpustack_iac.errors import GpustackError

ENV = "GPUSTACK_RUNTIME_IMAGE"
DEFAULT_IMAGE = f"ghcr.io/gpustack/gpustack-iac:{__version__}"
REPO = Path(__file__).resolve().parents[3]
# What the Kubernetes gateway imports beyond the SSH gateway's wheelhouse: the Deployment scaler.
KUBERNETES_REQUIREMENTS = ("lightkube>=0.15",)


class ImageError(GpustackError):
    """The runtime image cannot be pinned or built."""


def image_ref(env: Mapping[str, str] | None = None) -> str:
    return (env if env is not None else os.environ).get(ENV) or DEFAULT_IMAGE


def local_digest(ref: str) -> str | None:
    """The manifest digest a local Podman (or Docker) store has for `ref`, or None."""
    for tool, fmt in (("podman", "{{.Digest}}"), ("docker", "{{index .RepoDigests 0}}")):
        if shutil.which(tool) is None:
            continue
        try:
            done = subprocess.run([tool, "image", "inspect", "--format", fmt, ref], capture_output=True, text=True,
                                  timeout=60)
        except subprocess.TimeoutExpired:
            continue
        out = done.stdout.strip()
        if done.returncode == 0 and "sha256:" in out:
            return "sha256:" + out.split("sha256:", 1)[1]
    return None


def pinned(ref: str) -> str:
    """`ref` as `name@sha256:…`; raises ImageError naming how to build or pin it."""
    if "@sha256:" in ref:
        return ref
    digest = local_digest(ref)
    if digest is None:
        raise ImageError(f"the kubernetes gateway's runtime image {ref} is not pinned: no local image has that name. "
                         f"Build it from the Containerfile (python scripts/build_runtime_image.py --tag {ref}), push it "
                         f"where the cluster pulls from, or set {ENV}=NAME@sha256:DIGEST")
    return f"{ref.split('@', 1)[0]}@{digest}"
