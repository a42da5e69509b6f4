"""Runs' code (`files:`, `repos:`) in compile's steps: the checks decide where each run's code lands
and point its working directory there (refusing, naming the property, what cannot be shipped); the
program writes each bundle's archive where `up`'s code resources read it (stacks/code.py). Reading
the files is a fact (compile/facts.py: `Facts.code_bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from gpustack_iac import codebundle
from gpustack_iac.backends import Local, fleet_backend, get
from gpustack_iac.errors import Diagnostic
from gpustack_iac.spec.loader import Spec
from gpustack_iac.spec.models import CODE_ROOT, DevEnvironmentConfig, Document, RunParams, ServiceConfig, TaskConfig
from gpustack_iac.stacks.context import StackContext

Diag = Callable[[Document, str, str], Diagnostic]
BundleOf = Callable[[RunParams], "codebundle.Bundle | None"]
# Bundle key -> (archive file, repos the host clones): what stacks/code.py makes resources of.
Archives = dict[str, tuple[Path, list[dict[str, str | None]]]]


def code_root(ctx: StackContext) -> Path:
    return ctx.local_dir("code")


# `_landing`'s answer for code that lands on this machine (local fleets), not a backend name.
HERE = "this machine"


def _landing(spec: Spec) -> str | None:
    """Where code lands on every host: HERE (this machine), an SSH fleets' shared install_dir
    (`~` is each host user's home, expanded by the agent), or None when the stack mixes them."""
    if spec.fleets and all(isinstance(get(fleet_backend(f)), Local) for f in spec.fleets):
        return HERE
    dirs = {f.ssh_config.install_dir.rstrip("/") for f in spec.fleets if f.ssh_config is not None}
    if spec.fleets and all(f.is_ssh for f in spec.fleets) and len(dirs) == 1:
        return dirs.pop()
    return None


def ship(spec: Spec, definitions: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]],
         devs: dict[str, dict[str, Any]], ctx: StackContext, bundle_of: BundleOf, diag: Diag,
         problems: list[Diagnostic]) -> dict[str, codebundle.Bundle]:
    """Each run's bundle by key (one per distinct code, whatever the number of runs and replicas);
    the runs' definitions then work in the directory their code lands in."""
    bundles: dict[str, codebundle.Bundle] = {}
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
        try:
            bundle = bundle_of(run)
            where = codebundle.in_run(run.working_dir or ".", "working_dir")
        except codebundle.BundleError as exc:
            problems.append(diag(run, exc.path, f"{run.KIND} {run.name}: {exc}"))
            continue
        assert bundle is not None
        bundles[bundle.key] = bundle
        base_dir = str(code_root(ctx)) if root == HERE else f"{root}/code"
        path = f"{base_dir}/{bundle.key}/{where}".rstrip("/")
        for target in targets:
            if target.get("image"):
                _mount_code(target, f"{base_dir}/{bundle.key}", where)
                continue
            target["working_dir"] = path
            if "remote_working_dir" in target:
                target["remote_working_dir"] = path if root != HERE else None
    return bundles


def _mount_code(target: dict[str, Any], source: str, where: str) -> None:
    """A container sees the code where dstack puts it, at /workflow: the directory it was unpacked into
    on the host (`~/` is the agent user's home there), bind-mounted; it works in `working_dir` below it."""
    inside = f"{CODE_ROOT}/{where}".rstrip("/")
    target["mounts"] = [*(target.get("mounts") or []), {"source": source, "target": CODE_ROOT, "name": ""}]
    target["working_dir"] = inside
    if "remote_working_dir" in target:  # a task's containers work in remote_working_dir (runtime/tasks/runner.py)
        target["remote_working_dir"] = inside


def write_archives(bundles: dict[str, codebundle.Bundle], ctx: StackContext) -> Archives:
    """The bundles' archives as files (content-addressed, written once), for the code resources."""
    out: Archives = {}
    for key, bundle in bundles.items():
        archive = ctx.local_dir("code-archives") / f"{bundle.sha}.tar.gz"
        if not archive.exists():
            archive.parent.mkdir(parents=True, exist_ok=True)
            tmp = archive.with_suffix(f".{key[:8]}.tmp")
            tmp.write_bytes(bundle.data)
            tmp.replace(archive)
        out[key] = (archive, [c.to_json() for c in bundle.clones])
    return out
