"""Compile's first step: the facts, and the only I/O of compiling.

What this machine has (a Docker daemon, the local fleets' hosts) and what the SSH fleets' hosts
have (probed over SSH, nothing installed). Each fact is read once, when the checks first need it:
a configuration the checks already refuse never probes a host it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from gpustack_iac import codebundle

from gpustack_iac.backends import fleet_backend, get
from gpustack_iac.backends.kubernetes.image import ImageError, image_ref, pinned
from gpustack_iac.hostcheck import PlannedHost, local_hosts, planned_host
from gpustack_iac.providers import runtime_bundle
from gpustack_iac.providers.runtime_bundle import CloudRuntime
from gpustack_iac.runtime.agent.hostinfo import detect_docker
from gpustack_iac.runtime.gateway.haproxy.process import MIN_VERSION as HAPROXY_MIN_VERSION
from gpustack_iac.runtime.gateway.haproxy.process import haproxy_version
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import RunParams
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.fleet import local_host_names, probe_ssh_hosts

__all__ = ["Facts", "HostFacts", "HAPROXY_MIN_VERSION"]


@dataclass
class HostFacts:
    """The hosts placement is checked against, and one line per probed SSH host for the plan."""

    hosts: list[PlannedHost]
    lines: list[str] = field(default_factory=list)


class Facts:
    """Read-only answers about the world outside the configuration, each looked up at most once."""

    def __init__(self, spec: Spec, ctx: StackContext, hosts: Sequence[PlannedHost] | None = None,
                 offline: bool = False) -> None:
        self._spec, self._ctx = spec, ctx
        self._offline = offline  # contact no SSH host (`plan --offline`)
        self._given = list(hosts) if hosts is not None else None
        self._docker: bool | None = None
        self._hosts: HostFacts | None = None
        self._bundles: dict[int, codebundle.Bundle | None] = {}
        self._image: str | ImageError | None = None
        self._runtimes: dict[tuple[str, str, bool], CloudRuntime] = {}
        self._haproxy: tuple[tuple[int, int] | None] | None = None

    def docker(self) -> bool:
        """Whether a Docker (or Podman) daemon answers on this machine, where local fleets run
        replicas. With only SSH fleets nothing runs here: each SSH host's own engine is in its
        probed facts, and placement refuses an `image:` group no host has an engine for."""
        if self._spec.fleets and all(f.is_ssh for f in self._spec.fleets):
            return True
        if self._docker is None:
            self._docker = detect_docker()
        return self._docker

    def haproxy(self) -> tuple[int, int] | None:
        """HAProxy's (major, minor) on this machine's PATH, where local gateways run; None without one."""
        if self._haproxy is None:
            self._haproxy = (haproxy_version(),)
        return self._haproxy[0]

    def code_bundle(self, run: RunParams) -> codebundle.Bundle | None:
        """The run's `files:`/`repos:` read from this machine into one archive (codebundle.BundleError
        names the property when they cannot be shipped)."""
        if id(run) not in self._bundles:
            base = Path(run.source.file).parent if getattr(run, "source", None) else Path.cwd()  # type: ignore[attr-defined]
            self._bundles[id(run)] = codebundle.build(run, base)
        return self._bundles[id(run)]
    def runtime_image(self) -> str:
        """The Kubernetes gateway's runtime image pinned by digest (a local Podman/Docker lookup for a
        tag); raises ImageError naming how to build or pin it."""
        if self._image is None:
            try:
                self._image = pinned(image_ref())
            except ImageError as exc:
                self._image = exc
        if isinstance(self._image, ImageError):
            raise self._image
        return self._image

    def cloud_runtime(self, cloud: str, machine: str, gateway: bool) -> CloudRuntime:
        """The pinned runtime a cloud node (or gateway) installs: the planning version's wheels for the
        image's Python on `machine`, built once per version into a cache every stack shares (pip
        reaches the package index this machine uses; `--offline` only reads the cache). Raises a
        GpustackError naming what failed."""
        key = (cloud, machine, gateway)
        if key not in self._runtimes:
            cache = runtime_bundle.cache_dir()
            self._runtimes[key] = runtime_bundle.cloud_runtime(cache, machine, gateway=gateway, cloud=cloud,
                                                               offline=self._offline)
        return self._runtimes[key]

    def hosts(self) -> HostFacts:
        """Every host the stack's fleets will have, from whichever backend knows them; by default
        the local fleets' hosts, measured here, and the SSH fleets' hosts, probed over SSH (an
        unreachable one is shown, and then no host is checked: it might be the one a group needs)."""
        if self._hosts is None:
            self._hosts = HostFacts(self._given) if self._given is not None else _measured_hosts(self._spec, self._ctx, self._offline)
        return self._hosts


def _measured_hosts(spec: Spec, ctx: StackContext, offline: bool) -> HostFacts:
    # With a fleet of another backend the facts of some hosts are not known here, and a group only
    # they could run must not be refused: no check (no hosts).
    every_known = all(get(fleet_backend(f)).hosts_known_at_plan for f in spec.fleets)
    local = local_hosts([h for f in spec.fleets if not f.is_ssh for h in local_host_names(f)], ctx.state_root) if every_known else []
    if not any(f.is_ssh for f in spec.fleets):
        return HostFacts(local)
    probed = probe_ssh_hosts(spec.fleets, offline)
    lines = [h.summary() for h in probed]
    if any(h.facts is None for h in probed) or not every_known:
        return HostFacts([], lines)
    return HostFacts([*local, *(planned_host(h.name, h.facts or {}, h.labels) for h in probed)], lines)
