"""The wheelhouse uploaded to fleet hosts: this package's wheel and the runtime's dependencies.

Built on the machine running `up` with the same pip and package index it already uses, so hosts
need no internet. Only what the agent imports is included (not Pulumi or the planner's
dependencies). Built once per package version, Python version and platform, and cached in this
user's cache directory (`user_cache`), which every stack and state location shares; the host's
Python and machine must match it (checked before anything is uploaded).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gpustack_iac import __version__
from gpustack_iac.contract import progress
from gpustack_iac.errors import GpustackError

# What `python -m gpustack_iac.runtime.agent` imports beyond the standard library.
RUNTIME_REQUIREMENTS = ("aiohttp>=3.9", "psutil>=5.9", "pydantic>=2.7,<3", "uvloop>=0.19")
# What a gateway on a fleet host (providers/sshgateway.py) imports beyond the agent's set: the
# data plane's HTTP parser, TLS and ACME, the autoscaler's schedules. Only that host gets them.
GATEWAY_REQUIREMENTS = ("httptools>=0.6.2", "cryptography>=42", "acme>=3", "croniter>=2")
# What installs them on the host (pypa's wheel installer, run from its own wheel).
INSTALL_TOOLS = ("installer>=0.7",)
# The distribution root (pyproject.toml, gpustack_iac/): this file is gpustack_iac/providers/wheelhouse.py.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# Where the cache lives: `$GPUSTACK_CACHE_DIR`, else `$XDG_CACHE_HOME/gpustack-iac`, else
# `~/.cache/gpustack-iac`. Per user, not per state location: a wheelhouse depends only on the package
# version and sources, Python, machine and role (its key), never on the stack, so one build serves
# every project and stack of that version.
CACHE_DIR_ENV = "GPUSTACK_CACHE_DIR"
# A cached wheelhouse not used for this long is removed when another one is built (an edited
# checkout makes a new key on every change; without this the cache would only grow).
UNUSED_FOR_S = 14 * 24 * 3600


class WheelhouseError(GpustackError):
    """The wheelhouse could not be built for a host's platform."""


def user_cache(kind: str) -> Path:
    """This user's cache directory for `kind` (`ssh-wheelhouse`, `cloud-wheelhouse`)."""
    if os.environ.get(CACHE_DIR_ENV):
        root = Path(os.environ[CACHE_DIR_ENV])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpustack-iac"
    return root / kind


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    key: str  # python version + machine + package version + content hash

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.suffix == ".whl")


def local_platform() -> tuple[str, str]:
    """(`3.11`, `x86_64`): what this machine's wheels are built for."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine()


def _source_digest() -> str:
    """A digest of the package's sources, so an edited checkout gets a fresh wheel."""
    h = hashlib.sha256()
    for root in ("gpustack_iac",):
        for p in sorted((PACKAGE_ROOT / root).rglob("*.py")):
            h.update(str(p.relative_to(PACKAGE_ROOT)).encode())
            h.update(p.read_bytes())
    h.update((PACKAGE_ROOT / "pyproject.toml").read_bytes() if (PACKAGE_ROOT / "pyproject.toml").exists() else b"")
    return h.hexdigest()[:12]


def package_key() -> str:
    """What a host's install is compared against: the package version and its sources."""
    return f"{__version__}-{_source_digest()}"


def _pip(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise WheelhouseError(f"building the wheelhouse for fleet hosts failed: {tail}")


@contextlib.contextmanager
def _checkout_lock() -> Iterator[None]:
    digest = hashlib.sha256(str(PACKAGE_ROOT).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"gpustack-iac-wheel-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_into(target: Path, python: str, machine: str, requirements: list[str], cross: bool) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(target)]
    # pip builds this package inside its source tree (build/, *.egg-info), which stacks with
    # other state roots share: one build per checkout at a time.
    with _checkout_lock():
        _pip(pip + ["--no-deps", str(PACKAGE_ROOT)])
    if cross:
        download = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(target)]
        _pip(download + _cross_platform(python, machine) + requirements + list(INSTALL_TOOLS))
    else:
        _pip(pip + requirements + list(INSTALL_TOOLS))


def _cross_platform(python: str, machine: str) -> list[str]:
    """pip's options that fetch binary wheels for another CPython and Linux machine (cloud images):
    every runtime dependency publishes manylinux wheels, so nothing is compiled for the target."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in (28, 17, 12, 5)] + [f"manylinux2014_{machine}"]
    abi = "cp" + python.replace(".", "")
    return ["--only-binary=:all:", "--implementation", "cp", "--python-version", python, "--abi", abi,
            "--abi", "abi3", "--abi", "none", *(a for tag in tags for a in ("--platform", tag))]


def wheelhouse_key(python: str, machine: str, gateway: bool = False, extra: tuple[str, ...] = ()) -> str:
    """The cache key of a wheelhouse: Python, machine, package version and sources, role, extras."""
    extra_key = hashlib.sha256("\n".join(sorted(extra)).encode()).hexdigest()[:8] if extra else ""
    return f"py{python}-{machine}-{__version__}-{_source_digest()}" + ("-gateway" if gateway else "") + (
        f"-x{extra_key}" if extra else "")


def cached(cache_dir: Path, python: str, machine: str, gateway: bool = False,
           extra: tuple[str, ...] = ()) -> Wheelhouse | None:
    """The wheelhouse `build` would return, when it is already complete in the cache; else None."""
    key = wheelhouse_key(python, machine, gateway, extra)
    return Wheelhouse(cache_dir / key, key) if (cache_dir / key / ".complete").exists() else None


def build(cache_dir: Path, python: str, machine: str, gateway: bool = False, extra: tuple[str, ...] = (),
          cross: bool = False) -> Wheelhouse:
    """The cached wheelhouse for a host with `python` (`3.11`) on `machine`, built when missing;
    with `gateway`, also what the gateway needs; `extra`: further requirements (a cloud gateway's
    SDK). `cross`: the host is a cloud image, so another platform's binary wheels are downloaded
    (an SSH host must match this machine, which builds what has no wheel)."""
    local_python, local_machine = local_platform()
    cross = cross and (python, machine) != (local_python, local_machine)
    if (python, machine) != (local_python, local_machine) and not cross:
        raise WheelhouseError(f"the host has Python {python} on {machine}; this machine builds wheels for Python "
                              f"{local_python} on {local_machine}, and the host has no package index to install from; "
                              f"run up from a machine with Python {python} on {machine}")
    key = wheelhouse_key(python, machine, gateway, extra)
    requirements = list(RUNTIME_REQUIREMENTS) + (list(GATEWAY_REQUIREMENTS) if gateway else []) + list(extra)
    target = cache_dir / key
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        # Hosts are provisioned in parallel: one of them builds, the others wait for it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            (target / ".complete").touch()  # in use: kept by _prune_unused
            return Wheelhouse(target, key)
        target.mkdir(parents=True, exist_ok=True)
        with progress.activity(f"building the wheelhouse for Python {python} on {machine} (once per version)"):
            _build_into(target, python, machine, requirements, cross)
        (target / ".complete").write_text(key)
        _prune_unused(cache_dir, keep=target)
    return Wheelhouse(target, key)


def _prune_unused(cache_dir: Path, keep: Path) -> None:
    """Remove the wheelhouses nobody has used for UNUSED_FOR_S (under the cache's lock, so none is
    being built; one in use was touched by `build` moments before its upload)."""
    cutoff = time.time() - UNUSED_FOR_S
    for entry in cache_dir.iterdir():
        marker = entry / ".complete"
        if entry != keep and entry.is_dir() and marker.exists() and marker.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
