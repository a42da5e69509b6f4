"""A run's code on this machine (local fleets): the planned archive unpacked, `url` repos cloned, in a
directory named by the bundle's key. Unchanged code is the same resource, so it is shipped once per
change, not per replica or per `up`; a change is a replacement (the new tree is made before the old
one is removed, so running replicas keep theirs until they are rolled)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from gpustack_iac.errors import RuntimeApiError


class CodeShipError(RuntimeApiError):
    """The code could not be unpacked or a repo not cloned."""


def _dest(props: dict[str, Any]) -> Path:
    return Path(str(props["dest_root"])) / str(props["key"])


def _clone(clone: dict[str, Any], root: Path) -> None:
    target = root / str(clone.get("dest") or "")
    cmd = ["git", "clone", "--quiet"] + (["--branch", str(clone["branch"])] if clone.get("branch") else [])
    # No terminal prompt: a private URL without credentials fails instead of hanging `up`.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        subprocess.run([*cmd, "--", str(clone["url"]), str(target)], check=True, capture_output=True, env=env, timeout=600)
        if clone.get("hash"):
            subprocess.run(["git", "-C", str(target), "checkout", "--quiet", str(clone["hash"])], check=True,
                           capture_output=True, env=env, timeout=120)
    except subprocess.CalledProcessError as exc:
        raise CodeShipError(f"cloning {clone['url']} failed: {exc.stderr.decode(errors='replace').strip()}") from None


def ship(props: dict[str, Any]) -> Path:
    """Make the code tree (once): clones first (git needs an empty directory), the archive over them."""
    dest = _dest(props)
    if dest.is_dir():
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o755)
    try:
        for clone in props.get("clones") or []:
            _clone(clone, tmp)
        with tarfile.open(str(props["archive"]), "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        tmp.chmod(0o755)
        os.rename(tmp, dest)
    except (OSError, tarfile.TarError) as exc:
        raise CodeShipError(f"unpacking the run's code into {dest} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class CodeProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=str(props["key"]), outs={**props, "dir": str(ship(props))})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_ if _dest(props).is_dir() else None, outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("key", "dest_root") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        shutil.rmtree(_dest(props), ignore_errors=True)


class Code(Resource, module="workload", name="Code"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(CodeProvider(), name, {"dir": None, **props}, opts)


# ------------------------------------------------------------------------------ SSH fleet hosts


def _remote_root(conn: Any, root: str) -> str:
    """`~/...` as the SSH user's own absolute path (each host user has their own home)."""
    if root == "~" or root.startswith("~/"):
        home = conn.run('printf %s "$HOME"', hide=True).stdout
        return home + root[1:]
    return root


def ship_over_ssh(props: dict[str, Any]) -> str:
    """The code tree on the host (made once): the archive uploaded by SFTP, clones made there."""
    import shlex

    from gpustack_iac.providers.sshconn import SshTarget, connect  # noqa: PLC0415 - fabric only for SSH fleets

    key = str(props["key"])
    with connect(SshTarget.from_props(props["target"])) as conn:
        root = _remote_root(conn, str(props["remote_root"]))
        dest, tmp = f"{root}/{key}", f"{root}/.{key}.tmp"
        if conn.run(f"test -d {shlex.quote(dest)}", hide=True, warn=True).ok:
            return dest
        conn.run(f"rm -rf {shlex.quote(tmp)} && mkdir -p {shlex.quote(tmp)}", hide=True)
        for clone in props.get("clones") or []:
            target = f"{tmp}/{clone.get('dest') or ''}".rstrip("/")
            branch = f"--branch {shlex.quote(str(clone['branch']))} " if clone.get("branch") else ""
            run = conn.run(f"GIT_TERMINAL_PROMPT=0 git clone --quiet {branch}-- {shlex.quote(str(clone['url']))} "
                           f"{shlex.quote(target)}", hide=True, warn=True)
            if run.ok and clone.get("hash"):
                run = conn.run(f"git -C {shlex.quote(target)} checkout --quiet {shlex.quote(str(clone['hash']))}",
                               hide=True, warn=True)
            if not run.ok:
                raise CodeShipError(f"cloning {clone['url']} on {props['target']['hostname']} failed: {run.stderr.strip()}")
        conn.put(str(props["archive"]), f"{tmp}.tar.gz")
        conn.run(f"tar -xzf {shlex.quote(tmp)}.tar.gz --no-same-owner -C {shlex.quote(tmp)} && rm -f {shlex.quote(tmp)}.tar.gz"
                 f" && chmod 755 {shlex.quote(tmp)} && mv {shlex.quote(tmp)} {shlex.quote(dest)}", hide=True)
        return dest


class SshCodeProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['target']['hostname']}:{props['key']}", outs={**props, "dir": ship_over_ssh(props)})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("key", "remote_root", "target") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        import shlex

        from gpustack_iac.providers.sshconn import SshHostError, SshTarget, connect  # noqa: PLC0415

        try:
            with connect(SshTarget.from_props(props["target"])) as conn:
                root = _remote_root(conn, str(props["remote_root"]))
                # The last bundle takes `code/` with it, so the host's Host resource can remove its install_dir.
                conn.run(f"rm -rf {shlex.quote(root + '/' + str(props['key']))} && rmdir {shlex.quote(root)} 2>/dev/null",
                         hide=True, warn=True)
        except SshHostError:
            pass  # a host that is gone took its copy with it; its Host resource reports the loss


class SshCode(Resource, module="workload", name="SshCode"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(SshCodeProvider(), name, {"dir": None, **props}, opts)
