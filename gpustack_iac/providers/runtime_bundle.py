"""The runtime a cloud node or gateway installs: the planning version's wheels and their manifest.

The SSH fleets' wheelhouse (wheelhouse.py), built for the cloud image's Python and machine, is
uploaded once per version under `runtime/<key>/` in the stack's own bucket, with `manifest.json`
listing every wheel's SHA-256. The boot script pins the manifest's own SHA-256, so what an
instance installs is exactly what `up` built: a wheel or manifest changed in the bucket is refused
(runtime/bootfetch.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from gpustack_iac.errors import GpustackError
from gpustack_iac.providers import wheelhouse

# Ubuntu 24.04 (the clouds' deep-learning base images) ships Python 3.12.
IMAGE_PYTHON = "3.12"
# A cloud gateway's own SDK for sizing node groups (the `aws-runtime` extra's pin).
GATEWAY_SDKS = {"aws": ("boto3>=1.34",)}
# The catalog's CPU architecture (gpuhunt's `cpu_arch`) → the machine the wheels are built for.
MACHINES = {"x86": "x86_64", "arm": "aarch64"}
# Where the cloud runtime's wheelhouses are cached: this user's cache (wheelhouse.user_cache),
# shared by every stack, so one build serves each package version (`GPUSTACK_RUNTIME_CACHE` moves it).
CACHE_ENV = "GPUSTACK_RUNTIME_CACHE"


@dataclass(frozen=True)
class RuntimeObject:
    key: str  # the object's name in the bucket
    path: Path | None  # a wheel file; None for the manifest, whose bytes are `data`
    data: bytes = b""
    sha256: str = ""  # of the object's bytes (the manifest's for a wheel; the pinned one for the manifest)


@dataclass(frozen=True)
class RuntimeBundle:
    python: str
    machine: str
    version: str  # the wheelhouse key: Python, machine, package version and sources
    manifest: bytes

    @property
    def prefix(self) -> str:
        return f"runtime/{self.version}"

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest).hexdigest()

    def objects(self, wheels_dir: Path) -> list[RuntimeObject]:
        """What `up` uploads: every wheel, then the manifest."""
        wheels = [(w["name"], w["sha256"]) for w in json.loads(self.manifest)["wheels"]]
        return [RuntimeObject(f"{self.prefix}/{n}", wheels_dir / n, sha256=h) for n, h in wheels] + [
            RuntimeObject(f"{self.prefix}/manifest.json", None, self.manifest, self.manifest_sha256)]


@dataclass(frozen=True)
class CloudRuntime:
    """A built bundle and the directory holding its wheels: what a stack uploads and pins."""

    bundle: RuntimeBundle
    wheels: Path

    def objects(self) -> list[RuntimeObject]:
        return self.bundle.objects(self.wheels)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_for(house: wheelhouse.Wheelhouse, python: str, machine: str) -> RuntimeBundle:
    wheels = [{"name": p.name, "sha256": _sha256(p), "size": p.stat().st_size} for p in house.files()]
    manifest = json.dumps({"version": house.key, "python": python, "machine": machine, "wheels": wheels},
                          sort_keys=True, indent=1).encode()
    return RuntimeBundle(python=python, machine=machine, version=house.key, manifest=manifest)


def build(cache_dir: Path, machine: str, *, gateway: bool, cloud: str,
          python: str = IMAGE_PYTHON) -> tuple[RuntimeBundle, wheelhouse.Wheelhouse]:
    """The bundle for one image (Python and machine) and role; the wheelhouse is cached per key."""
    extra = GATEWAY_SDKS.get(cloud, ()) if gateway else ()
    house = wheelhouse.build(cache_dir, python, machine, gateway=gateway, extra=extra, cross=True)
    return manifest_for(house, python, machine), house


def cache_dir() -> Path:
    return Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else wheelhouse.user_cache("cloud-wheelhouse")


def machine_of(cpu_arch: str | None) -> str:
    """The wheels' machine for a catalog CPU architecture (x86 when the catalog does not say)."""
    return MACHINES.get(cpu_arch or "x86", cpu_arch or "x86_64")


def cloud_runtime(cache: Path, machine: str, *, gateway: bool, cloud: str, offline: bool = False) -> CloudRuntime:
    """The bundle a cloud node (or gateway) of `machine` installs, built when missing; `offline`
    (`plan --offline`) uses only the cache and says how to fill it."""
    extra = GATEWAY_SDKS.get(cloud, ()) if gateway else ()
    if offline:
        house = wheelhouse.cached(cache, IMAGE_PYTHON, machine, gateway=gateway, extra=extra)
        if house is None:
            raise GpustackError(f"the {cloud} runtime for Python {IMAGE_PYTHON} on {machine} is not built yet and "
                                "--offline reaches no package index: run plan once without --offline")
        return CloudRuntime(manifest_for(house, IMAGE_PYTHON, machine), house.path)
    bundle, house = build(cache, machine, gateway=gateway, cloud=cloud)
    return CloudRuntime(bundle, house.path)
