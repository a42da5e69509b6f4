"""What each implemented backend does with each configuration property: honoured, refused, or warned.

This table is the project's "no silent ignore" promise as data:
- docs/reference/support.md is generated from it (`render_markdown`);
- tests/spec/test_support_matrix.py walks every field of every configuration model and fails on one
  no row classifies (a row classifies its property and everything below it);
- `check` turns the rows marked `enforce` into plan-time refusals (and warnings), naming the property
  and the backend. Rows not marked `enforce` are enforced by compile's own checks (compile.py,
  compile_workloads.py), whose behaviour the row records.

Keys are `<kind>.<property path>` (`fleet.placement`, `gateway.public_ip`), or `run.<property>` for what
services, replica groups, tasks and dev environments share (RunParams / ProfileParams). A kind-specific
key wins over the `run.` one.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field

from gpustack_iac.backends import get
from gpustack_iac.spec.models import Document, FleetConfig, RunParams, ServiceConfig

HONOURED, REFUSED, WARNED = "honoured", "refused", "warned"
COLUMNS: tuple[str, ...] = ("local", "ssh", "aws", "gcp", "azure", "kubernetes")

# A property is "used" when a document sets it to something that needs support; `used` returns the
# concrete property paths (e.g. `ssh_config.hosts[1].blocks`), empty when the property is unused.
Used = Callable[[Document], list[str]]


@dataclass(frozen=True)
class Support:
    statuses: tuple[str, ...]  # one per COLUMNS
    note: str = ""
    # "all": `check` enforces the row at plan (refusals and warnings); "refusals": only its refusals
    # (compile's own checks already warn); "": compile's own checks enforce what the row records.
    enforce: str = ""
    used: Used | None = field(default=None, compare=False)
    # The backends `check` enforces the row on (None: all); compile's backend checks do the others.
    enforce_on: tuple[str, ...] | None = None

    def status(self, backend: str) -> str:
        # Backends outside COLUMNS are refused whole at plan ("backend X is not implemented yet").
        return self.statuses[COLUMNS.index(backend)] if backend in COLUMNS else REFUSED


def _row(local: str, ssh: str, aws: str, gcp: str, azure: str, kubernetes: str, note: str = "",
         enforce: str = "", used: Used | None = None, enforce_on: tuple[str, ...] | None = None) -> Support:
    return Support((local, ssh, aws, gcp, azure, kubernetes), note, enforce, used, enforce_on)


def _by_capability(capability: str, local: str, ssh: str, note: str, used: Used) -> Support:
    """A row whose cloud columns are the backends' own capability (backends/): honoured where they
    have it, refused by compile's backend checks elsewhere; `check` enforces the host columns."""
    clouds = tuple(H if getattr(get(b), capability) else R for b in COLUMNS[2:])
    return Support((local, ssh, *clouds), note, "all", used, ("local", "ssh"))


H, R, W = HONOURED, REFUSED, WARNED
ALL = _row(H, H, H, H, H, H)
HOSTS_ONLY = _row(H, H, R, R, R, R, "runs on fleet hosts through their agents (docs/workloads.md)")
CLOUD_PLACEMENT = _row(W, W, H, H, H, W, "placement among cloud offers; a fleet host has no region or price")
PROFILE_WARNED = _row(W, W, W, W, W, W, "a dstack provisioning policy; fleets here are declared, not created per run")


def _set(name: str, default: object) -> Used:
    def used(doc: Document) -> list[str]:
        value = getattr(doc, name, default)
        return [name] if name in doc.model_fields_set and value != default else []

    return used


def _host_blocks(doc: Document) -> list[str]:
    if not isinstance(doc, FleetConfig) or doc.ssh_config is None:
        return []
    return [f"ssh_config.hosts[{i}].blocks" for i, h in enumerate(doc.ssh_config.hosts) if h.blocks not in (None, 1)]


def _probes(doc: Document) -> list[str]:
    return ["probes[1]"] if isinstance(doc, ServiceConfig) and len(doc.probes) > 1 else []


def _ready_after(doc: Document) -> list[str]:
    probes = doc.probes if isinstance(doc, ServiceConfig) else []
    return [f"probes[{i}].ready_after" for i, p in enumerate(probes) if p.ready_after != 1]


def _shm_size(doc: Document) -> list[str]:
    if not isinstance(doc, ServiceConfig):
        return []
    return ["resources.shm_size"] if any(g.resources is not None and g.resources.shm_size for g in doc.groups) else []


def _run_shm_size(doc: Document) -> list[str]:
    resources = getattr(doc, "resources", None)
    image = getattr(doc, "image", None)
    return ["resources.shm_size"] if resources is not None and resources.shm_size is not None and not image else []


def _without_image(used: Used) -> Used:
    """Used only by a run without `image` (a process; a container honours it)."""
    return lambda doc: [] if getattr(doc, "image", None) else used(doc)


def _cpu_arch(doc: Document) -> list[str]:
    resources = getattr(doc, "resources", None)
    if isinstance(doc, ServiceConfig):
        found = [g.resources.cpu_arch for g in doc.groups if g.resources is not None and g.resources.cpu_arch]
        return ["resources.cpu"] if found else []
    return ["resources.cpu"] if resources is not None and resources.cpu_arch else []


MATRIX: dict[str, Support] = {
    # ---------------------------------------------------------------- what every run shares
    "run.name": ALL,
    "run.image": _row(H, H, H, H, H, H, "local and SSH: needs Docker or Podman on the host, refused at plan otherwise"),
    "run.python": _row(W, W, W, W, W, W, "no base image is picked; the host's python3 runs the commands"),
    "run.nvcc": _row(W, W, W, W, W, W, "no base image is picked"),
    "run.entrypoint": _row(W, W, W, W, W, W),
    "run.working_dir": _row(H, H, R, R, R, R, "relative to the configuration's directory on local/SSH hosts; a cloud has "
                            "no copy of the planning machine's directories", "all", _set("working_dir", None)),
    "run.home_dir": _row(W, W, W, W, W, W),
    "run.privileged": _row(W, W, R, R, R, R, "a task or dev environment without image is a process; with image the "
                           "container runs privileged", "all", _without_image(_set("privileged", False))),
    "run.user": _row(W, W, R, R, R, R, "a task or dev environment without image runs as the agent's user; with image "
                     "the container runs as `user`", "all", _without_image(_set("user", None))),
    "service.privileged": _row(H, H, H, H, H, R, "image groups run privileged containers (process groups: warned); "
                               "Kubernetes pods are restricted", "all", _set("privileged", False), ("kubernetes",)),
    "service.user": _row(H, H, H, H, H, R, "image groups run as `user` (process groups: warned); Kubernetes pods keep "
                         "the image's user", "all", _set("user", None), ("kubernetes",)),
    "service.registry_auth": _row(H, H, H, H, H, R, "image groups pull with it (`${{ secrets.X }}` resolved); no "
                                  "image pull secret is made on Kubernetes", "all", _set("registry_auth", None),
                                  ("kubernetes",)),
    "run.registry_auth": _row(W, W, W, W, W, W, "`${{ secrets.X }}` resolved; pulling with it is the container runtime's job"),
    "run.env": _row(H, H, H, H, H, H, "`${{ secrets.NAME }}` resolved from `gpustack-iac secret`, secret everywhere"),
    "run.setup": ALL,
    "run.commands": ALL,
    "run.resources": _row(H, H, H, H, H, H, "placement by CPU, memory, disk and GPU facts of hosts or catalog offers"),
    "run.resources.shm_size": _row(H, H, H, H, H, R, "a container's `--shm-size`"),
    "service.resources.shm_size": _row(H, H, H, H, H, R, "image groups: `--shm-size` (process groups: warned); not on "
                                       "Kubernetes", "all", _shm_size, ("kubernetes",)),
    "task.resources.shm_size": _row(W, W, R, R, R, R, "a task without image shares the host's /dev/shm", "all",
                                    _run_shm_size),
    "dev-environment.resources.shm_size": _row(W, W, R, R, R, R, "a dev environment without image shares the host's "
                                               "/dev/shm", "all",
                                               _run_shm_size),
    "run.resources.cpu": _row(H, R, R, R, R, R, "the CPU architecture (`arm:8`) is checked against this machine only",
                              "all", _cpu_arch),
    "run.volumes": HOSTS_ONLY,
    "run.files": _row(H, H, R, R, R, R, "shipped once per content change into the run's working directory: on this "
                      "machine, or by SFTP to each SSH host's `install_dir` (compile_code.py); an `image` run gets it bind-mounted at "
                      "`/workflow`; clouds are refused at plan"),
    "run.repos": _row(H, H, R, R, R, R, "a local checkout ships what git tracks; a url is cloned on the host"),
    "run.backends": ALL,
    "run.regions": CLOUD_PLACEMENT,
    "run.instance_types": CLOUD_PLACEMENT,
    "run.spot_policy": CLOUD_PLACEMENT,
    "run.max_price": CLOUD_PLACEMENT,
    "run.retry": ALL,
    "run.retry_policy": ALL,
    "run.max_duration": ALL,
    "run.pool_name": PROFILE_WARNED,
    "run.instance_name": PROFILE_WARNED,
    "run.creation_policy": PROFILE_WARNED,
    "run.termination_policy": PROFILE_WARNED,
    "run.termination_idle_time": PROFILE_WARNED,
    "run.idle_duration": PROFILE_WARNED,
    "run.fleets": ALL,
    "run.schedule": _row(R, R, R, R, R, R, "dstack starts a service or dev environment on its cron; here only tasks run on "
                         "a schedule", "all", _set("schedule", None)),
    # ---------------------------------------------------------------- service
    "service.type": ALL,
    "service.port": ALL,
    "service.gateway": _row(H, H, H, H, H, H, "`gateway: false` is refused: the gateway counts load and routes"),
    "service.model": ALL,
    "service.https": ALL,
    "service.auth": ALL,
    "service.replicas": ALL,
    "service.scaling": _row(H, H, H, H, H, W, "Kubernetes: services are not registered with the in-cluster controller "
                            "yet, so its autoscaler never sees them and each Deployment stays at the minimum", "all",
                            _set("scaling", None)),
    "service.probes": _row(H, H, H, H, H, R, "a replica is ready when every probe passes; a Kubernetes readiness probe "
                           "is one request, so a second probe is refused there", "all", _probes),
    "service.probes.ready_after": _row(W, W, W, W, W, W, "one passing round of probes makes a replica ready", "all",
                                       _ready_after),
    "service.rate_limits": ALL,
    "service.replica_groups": ALL,
    # ---------------------------------------------------------------- task and dev environment
    "task.type": HOSTS_ONLY,
    "task.nodes": HOSTS_ONLY,
    "task.ports": HOSTS_ONLY,
    "task.schedule": _row(H, H, R, R, R, R, "the task runner starts a run at each cron time (UTC), skipping a time "
                          "while the previous run still goes (docs/workloads.md)"),
    "dev-environment.type": HOSTS_ONLY,
    "dev-environment.ide": HOSTS_ONLY,
    "dev-environment.version": _row(W, W, R, R, R, R, "the desktop IDE installs its own server over SSH"),
    "dev-environment.init": HOSTS_ONLY,
    "dev-environment.inactivity_duration": HOSTS_ONLY,
    "dev-environment.ports": HOSTS_ONLY,
    # ---------------------------------------------------------------- fleet
    "fleet.type": ALL,
    "fleet.name": ALL,
    "fleet.nodes": _row(H, H, H, H, H, H, "local starts `nodes.target` or the minimum; clouds make a scaling group, "
                          "sized by the controller of a gateway of its backend and region where the backend can "
                          "(`sizes_node_groups`); elsewhere plan warns that a range stays at its minimum and refuses a "
                          "service only 0-node fleets could serve"),
    "fleet.placement": _by_capability("cluster_placement", H, W, "`cluster`: one machine is one network; SSH hosts' "
                                      "interconnect is not checked; a cloud with the capability makes a cluster placement "
                                      "group", _set("placement", "any")),
    "fleet.resources": ALL,
    "fleet.resources.cpu": _row(H, R, R, R, R, R, "the CPU architecture (`arm:8`) is checked against this machine only; "
                                "the catalog has no architecture", "all", _cpu_arch),
    "fleet.blocks": _row(R, R, R, R, R, R, "hosts are shared by resource fit, not split into blocks", "all", _set("blocks", 1),
                         ("local", "ssh")),
    "fleet.ssh_config.hosts.blocks": _row(R, R, R, R, R, R, "hosts are shared by resource fit, not split into blocks",
                                          "all", _host_blocks),
    "fleet.ssh_config": _row(R, H, R, R, R, R, "an SSH fleet"),
    "fleet.backends": ALL,
    "fleet.regions": CLOUD_PLACEMENT,
    "fleet.instance_types": CLOUD_PLACEMENT,
    "fleet.spot_policy": CLOUD_PLACEMENT,
    "fleet.max_price": CLOUD_PLACEMENT,
    "fleet.retry": _row(W, W, H, H, H, W),
    "fleet.idle_duration": Support((W, W, *(H if get(b).removes_idle_nodes else R for b in COLUMNS[2:])),
                                   "fleet hosts are not terminated when idle; a cloud with the capability drains a node "
                                   "idle that long (above `nodes.min`) and terminates that instance", "all",
                                   _set("idle_duration", None)),
    "fleet.reservation": _by_capability("reservations", R, R, "a capacity reservation where the cloud backend has the "
                                        "capability; fleet hosts have none", _set("reservation", None)),
    "fleet.env": _row(W, W, W, W, W, W, "node-level environment is not passed to runs", "all",
                      lambda doc: ["env"] if getattr(doc, "env", None) else []),
    "fleet.ssh_from": _row(W, W, H, H, H, W, "firewall rules of cloud nodes"),
    # ---------------------------------------------------------------- gateway
    "gateway.type": ALL,
    "gateway.name": ALL,
    "gateway.backend": ALL,
    "gateway.host": _row(R, H, R, R, R, R, "the SSH fleet host a gateway runs on"),
    "gateway.region": CLOUD_PLACEMENT,
    "gateway.domain": ALL,
    "gateway.default": ALL,
    "gateway.certificate": ALL,
    "gateway.public_ip": Support(tuple(H if get(b).private_gateway else R for b in COLUMNS),
                                 "`false`: local and SSH gateways listen on loopback or the host; a cloud with the "
                                 "capability builds no public address (compile's gateway checks)"),
    "gateway.instance_type": _row(W, W, H, H, H, W),
    "gateway.replicas": ALL,
    "gateway.ssh_from": _row(W, W, H, H, H, W),
    "gateway.data_plane": _row(H, R, R, R, R, R, "`auto`/`haproxy`: HAProxy in front of the gateway on the local backend; "
                               "elsewhere only the default `python` for now (the SSH and cloud boot scripts do not install "
                               "HAProxy yet)", "all", _set("data_plane", "python")),
    # ---------------------------------------------------------------- volume, router, project
    "volume": _row(H, H, R, R, R, R, "host directories on local and SSH hosts; cloud disks are refused at plan"),
    "router": ALL,
    "project": ALL,
}


def support_for(kind: str, path: str) -> Support | None:
    """The row classifying `path` of a `kind` document: its own, or its nearest classified parent's."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        for key in (f"{kind}.{prefix}", f"run.{prefix}" if kind in ("service", "task", "dev-environment") else ""):
            if key in MATRIX:
                return MATRIX[key]
    return MATRIX.get(kind)


@dataclass(frozen=True)
class Finding:
    path: str  # the property as written, e.g. `ssh_config.hosts[1].blocks`
    status: str  # REFUSED or WARNED
    message: str


def check(doc: Document, backend: str) -> list[Finding]:
    """The enforced rows' verdicts on `doc` deployed on `backend` (a COLUMNS name)."""
    if backend not in COLUMNS:
        return []  # a backend not implemented is refused whole ("backend X is not implemented yet")
    out = []
    kind = doc.KIND
    for key, row in MATRIX.items():
        owner, _, prop = key.partition(".")
        if not row.enforce or row.used is None:
            continue
        if not (owner == kind or (owner == "run" and isinstance(doc, RunParams))):
            continue
        if row.enforce_on is not None and backend not in row.enforce_on:
            continue
        if support_for(kind, prop) is not row:
            continue  # a kind-specific row overrides this shared one
        status = row.status(backend)
        if status == HONOURED or (status == WARNED and row.enforce != "all"):
            if status == HONOURED and row.used is _cpu_arch and backend == "local":
                out += [Finding(p, REFUSED, m) for p, m in _local_arch_mismatch(doc)]
            continue
        for path in row.used(doc):
            verb = "is not supported" if status == REFUSED else "is ignored"
            out.append(Finding(path, status, f"{kind} {getattr(doc, 'name', '')}: {path} {verb} on backend {backend}"
                                             + (f" ({row.note})" if row.note else "")))
    return out


_MACHINE_ARCH = {"x86_64": "x86", "amd64": "x86", "i686": "x86", "aarch64": "arm", "arm64": "arm"}


def _local_arch_mismatch(doc: Document) -> list[tuple[str, str]]:
    here = _MACHINE_ARCH.get(platform.machine().lower(), platform.machine().lower())
    arches = {g.resources.cpu_arch for g in doc.groups if g.resources is not None} if isinstance(doc, ServiceConfig) \
        else {getattr(getattr(doc, "resources", None), "cpu_arch", None)}
    return [("resources.cpu", f"{doc.KIND} {getattr(doc, 'name', '')}: resources.cpu asks for {arch} CPUs; this machine "
                              f"(backend local) is {here}") for arch in sorted(a for a in arches if a) if arch != here]


def render_markdown() -> str:
    """docs/reference/support.md."""
    lines = [
        "# Property support by backend",
        "",
        "<!-- Generated from gpustack_iac/support.py by `python -m gpustack_iac.support`; do not edit. -->",
        "",
        "Every configuration property is **honoured**, **refused** (`plan` fails naming the property and the backend) or",
        "**warned** (`plan` says it is ignored) on each backend. A row covers the property and everything below it;",
        "`run.` rows are what services, replica groups, tasks and dev environments share. Backends not listed here",
        "validate and are refused whole by `plan`. Rows marked *plan* are enforced from this table.",
        "",
        "| property | " + " | ".join(COLUMNS) + " | notes |",
        "| --- | " + " | ".join("---" for _ in COLUMNS) + " | --- |",
    ]
    for key, row in MATRIX.items():
        note = row.note + (" *(plan)*" if row.enforce else "")
        lines.append(f"| `{key}` | " + " | ".join(row.statuses) + f" | {note.strip()} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
