"""codebundle: what `files:`/`repos:` ship, where it lands, the size limit, and a stable content hash."""

from __future__ import annotations

import subprocess
import tarfile
import io
from pathlib import Path

import pytest

from gpustack_iac.codebundle import BundleError, build, in_run
from gpustack_iac.spec.loader import load_text


def _task(extra: str):  # type: ignore[no-untyped-def]
    return load_text("type: task\nname: t\ncommands: [ls]\n" + extra).tasks[0]


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return sorted(tar.getnames())


def test_files_land_in_the_working_directory_with_ignore_files_honoured(tmp_path: Path) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "app.py").write_text("print(1)\n")
    (tmp_path / "src" / "sub" / "w.bin").write_bytes(b"0" * 10)
    (tmp_path / "src" / "sub" / "keep.txt").write_text("k")
    (tmp_path / "src" / ".gitignore").write_text("*.bin\n")
    (tmp_path / "src" / ".dstackignore").write_text("keep.txt\n")
    (tmp_path / "n.txt").write_text("n")
    bundle = build(_task("files: ['src:.', 'n.txt:/workflow/data/n.txt']\n"), tmp_path)
    assert bundle is not None and _names(bundle.data) == [".dstackignore", ".gitignore", "app.py", "data/n.txt"]
    again = build(_task("files: ['src:.', 'n.txt:/workflow/data/n.txt']\n"), tmp_path)
    assert again is not None and again.sha == bundle.sha  # deterministic: unchanged code, same key
    (tmp_path / "src" / "app.py").write_text("print(2)\n")
    changed = build(_task("files: ['src:.', 'n.txt:/workflow/data/n.txt']\n"), tmp_path)
    assert changed is not None and changed.key != bundle.key


def test_a_local_repo_ships_what_git_sees(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("a")
    (repo / ".gitignore").write_text("*.key\n")
    (repo / "x.key").write_text("secret")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    bundle = build(_task("repos: ['./repo:/workflow/r']\n"), tmp_path)
    assert bundle is not None and _names(bundle.data) == ["r/.gitignore", "r/a.py"]


def test_url_repos_are_cloned_on_the_host_not_archived(tmp_path: Path) -> None:
    bundle = build(_task("repos: [{url: 'https://git.example.com/o/r.git', branch: dev, path: lib}]\n"), tmp_path)
    assert bundle is not None and _names(bundle.data) == []
    assert [c.to_json() for c in bundle.clones] == [{"url": "https://git.example.com/o/r.git", "branch": "dev",
                                                     "hash": None, "dest": "lib"}]


def test_refusals_name_the_property(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BundleError) as caught:
        build(_task("files: ['nope.txt']\n"), tmp_path)
    assert caught.value.path == "files[0].local_path"
    (tmp_path / "f").write_text("f")
    with pytest.raises(BundleError) as caught:
        build(_task("files: ['f:/etc/f']\n"), tmp_path)
    assert caught.value.path == "files[0].path" and "outside the run's working directory" in str(caught.value)
    with pytest.raises(BundleError) as caught:
        build(_task("repos: ['.']\n"), tmp_path)
    assert caught.value.path == "repos[0].local_path" and "not a git checkout" in str(caught.value)
    (tmp_path / "big").write_bytes(b"x" * 2048)
    monkeypatch.setenv("GPUSTACK_CODE_UPLOAD_LIMIT", "1KB")
    with pytest.raises(BundleError) as caught:
        build(_task("files: ['big']\n"), tmp_path)
    assert "over 1024 bytes" in str(caught.value)


def test_paths_in_the_run() -> None:
    assert in_run("/workflow", "p") == "" and in_run("/workflow/a/b", "p") == "a/b" and in_run("a", "p") == "a"
    with pytest.raises(BundleError):
        in_run("../x", "p")
