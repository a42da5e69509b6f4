"""A run's code (`files:` and local `repos:`) as one content-addressed archive, built when planning.

dstack's semantics: code lands in the run's working directory (`/workflow`); a `files:` entry's
relative path is relative to it, an absolute one must lie under it; a local repo ships its files as
`git ls-files` sees them (`.gitignore` honoured everywhere in it), a directory outside git ships what
its own `.gitignore` leaves; `.dstackignore` is honoured on top of both. The archive is
deterministic (sorted, zero mtimes and owners), so its SHA-256 names it: an unchanged bundle is the
same resource and is shipped once, whatever the number of replicas. `url` repos are not archived: the
host clones them (`clones`). Above `code_limit()` bytes the plan is refused, naming the property.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

from gpustack_iac.spec.models import CODE_ROOT, RunParams

LIMIT_ENV = "GPUSTACK_CODE_UPLOAD_LIMIT"
DEFAULT_LIMIT = 2 * 1024 * 1024  # dstack's default for uploaded code
IGNORE_FILES = (".gitignore", ".dstackignore")


class BundleError(Exception):
    """A `files`/`repos` entry that cannot be shipped; `path` is the property (`files[1].local_path`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Clone:
    url: str
    branch: str | None
    hash: str | None
    dest: str  # relative to the code root ("" is the root itself)

    def to_json(self) -> dict[str, str | None]:
        return {"url": self.url, "branch": self.branch, "hash": self.hash, "dest": self.dest}


@dataclass(frozen=True)
class Bundle:
    sha: str
    data: bytes  # the .tar.gz
    size: int  # bytes of file content
    count: int  # files
    clones: tuple[Clone, ...]

    @property
    def key(self) -> str:
        """What names the shipped tree: the archive and the clones together."""
        extra = "".join(f"\n{c.url} {c.branch} {c.hash} {c.dest}" for c in self.clones)
        return hashlib.sha256((self.sha + extra).encode()).hexdigest()


def code_limit() -> int:
    raw = os.environ.get(LIMIT_ENV, "").strip().upper()
    m = re.fullmatch(r"(\d+)\s*(B|KB|MB|GB)?", raw)
    if not m:
        return DEFAULT_LIMIT
    return int(m.group(1)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2) or "B"]


def in_run(path: str, prop: str) -> str:
    """A path in the run, relative to the code root (`/workflow/x` and `x` are both `x`)."""
    p = PurePosixPath(path)
    if p.is_absolute():
        try:
            p = p.relative_to(CODE_ROOT)
        except ValueError:
            raise BundleError(prop, f"{path} is outside the run's working directory {CODE_ROOT}: hosts without "
                                    f"containers only receive code there") from None
    if ".." in p.parts:
        raise BundleError(prop, f"{path} leaves the run's working directory")
    return "" if str(p) == "." else str(p)


def build(run: RunParams, base: Path) -> Bundle | None:
    """The run's bundle, or None when it has no `files` and no `repos`."""
    if not run.files and not run.repos:
        return None
    entries: dict[str, Path] = {}
    clones: list[Clone] = []
    for i, repo in enumerate(run.repos):
        dest = in_run(repo.path, f"repos[{i}].path")
        if repo.url is not None:
            clones.append(Clone(repo.url, repo.branch, repo.hash, dest))
            continue
        root = (base / (repo.local_path or ".")).resolve()
        if not (root / ".git").exists():
            raise BundleError(f"repos[{i}].local_path", f"{root} is not a git checkout (a repo ships what git tracks; "
                                                        "use files: for a plain directory)")
        _add_tree(entries, root, dest, _git_files(root))
    for i, item in enumerate(run.files):
        source = (base / item.local_path).resolve()
        dest = in_run(item.path, f"files[{i}].path")
        if source.is_file():
            entries[dest] = source
        elif source.is_dir():
            _add_tree(entries, source, dest, _walk(source))
        else:
            raise BundleError(f"files[{i}].local_path", f"{item.local_path} does not exist (looked for {source})")
    return _archive(entries, tuple(clones))


def _add_tree(entries: dict[str, Path], root: Path, dest: str, files: list[str]) -> None:
    ignored = _spec(root, ".dstackignore")
    for rel in files:
        if ignored is None or not ignored.match_file(rel):
            entries[str(PurePosixPath(dest) / rel) if dest else rel] = root / rel


def _spec(root: Path, name: str) -> pathspec.GitIgnoreSpec | None:
    path = root / name
    return pathspec.GitIgnoreSpec.from_lines(path.read_text().splitlines()) if path.is_file() else None


def _git_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True, timeout=60).stdout
    return sorted(f for f in out.decode().split("\0") if f and (root / f).is_file())


def _walk(root: Path) -> list[str]:
    ignored = _spec(root, ".gitignore")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and not (ignored and ignored.match_file(f"{rel_dir / d}/")))
        for f in filenames:
            rel = str(rel_dir / f) if str(rel_dir) != "." else f
            if not (ignored and ignored.match_file(rel)):
                found.append(rel)
    return sorted(found)


def _archive(entries: dict[str, Path], clones: tuple[Clone, ...]) -> Bundle:
    limit = code_limit()
    raw = io.BytesIO()
    size = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            data = entries[name].read_bytes()
            size += len(data)
            if size > limit:
                raise BundleError("files" if name else "repos", f"the run's code is over {limit} bytes (at {name}); "
                                  f"ignore large files in .dstackignore or raise {LIMIT_ENV}")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if os.access(entries[name], os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    data = packed.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest(), data, size, len(entries), clones)
