"""Plan-time shipping of runs' code (`files:`, `repos:`): build each run's bundle, refuse what cannot
be shipped (naming the property), point the run's working directory at where its code lands, and
keep the archives where `up`'s code resources read them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from gpustack_iac import codebundle
from gpustack_iac.backends import fleet_backend
from gpustack_iac.errors import Diagnostic
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import DevEnvironmentConfig, Document, ServiceConfig, TaskConfig
from gpustack_iac.stacks.context import StackContext

Diag = Callable[[Document, str, str], Diagnostic]
# Bundle key -> (archive file, repos the host clones): what stacks/code.py makes resources of.
Archives = dict[str, tuple[Path, list[dict[str, str | None]]]]


def code_root(ctx: StackContext) -> Path:
    return ctx.local_dir("code")


def _landing(spec: Spec) -> str | None:
    """Where code lands on every host: "local" (this machine), an SSH fleets' shared install_dir
    (`~` is each host user's home, expanded by the agent), or None when the stack mixes them."""
    if spec.fleets and all(fleet_backend(f) == "local" for f in spec.fleets):
        return "local"
    dirs = {f.ssh_config.install_dir.rstrip("/") for f in spec.fleets if f.ssh_config is not None}
    if spec.fleets and all(f.is_ssh for f in spec.fleets) and len(dirs) == 1:
        return dirs.pop()
    return None


def ship(spec: Spec, definitions: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]],
         devs: dict[str, dict[str, Any]], ctx: StackContext, diag: Diag, problems: list[Diagnostic]) -> Archives:
    archives: Archives = {}
    runs: list[tuple[ServiceConfig | TaskConfig | DevEnvironmentConfig, list[dict[str, Any]]]] = [
        *((s, definitions[str(s.name)]["groups"]) for s in spec.services),
        *((t, [tasks[str(t.name)]]) for t in spec.tasks),
        *((d, [devs[str(d.name)]]) for d in spec.dev_environments),
    ]
    for run, targets in runs:
        if not run.files and not run.repos:
            continue
        prop = "files" if run.files else "repos"
        root = _landing(spec)
        if root is None:
            backends = ", ".join(sorted({fleet_backend(f) for f in spec.fleets}))
            problems.append(diag(run, prop, f"{run.KIND} {run.name}: {prop} is shipped to local fleets, or to SSH fleets "
                                            f"with one install_dir, not to a stack of backend {backends}"))
            continue
        base = Path(run.source.file).parent if run.source else Path.cwd()
        try:
            bundle = codebundle.build(run, base)
        except codebundle.BundleError as exc:
            problems.append(diag(run, exc.path, f"{run.KIND} {run.name}: {exc}"))
            continue
        assert bundle is not None
        archive = ctx.local_dir("code-archives") / f"{bundle.sha}.tar.gz"
        if not archive.exists():
            archive.parent.mkdir(parents=True, exist_ok=True)
            archive.write_bytes(bundle.data)
        archives[bundle.key] = (archive, [c.to_json() for c in bundle.clones])
        base_dir = code_root(ctx) if root == "local" else f"{root}/code"
        where = f"{base_dir}/{bundle.key}/{codebundle.in_run(run.working_dir or '.', 'working_dir')}".rstrip("/")
        for target in targets:
            target["working_dir"] = where
            if "remote_working_dir" in target:
                target["remote_working_dir"] = where if root != "local" else None
            if "generation" in target:
                # New code is a new version of the group: the controller rolls it.
                target["generation"] = hashlib.sha256(f"{target['generation']}:{bundle.key}".encode()).hexdigest()
    return archives
