"""The wheelhouse cache is the user's, not the stack's: every project and state location of one
user shares a build per version, and a wheelhouse nobody uses goes when another is built."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gpustack_iac.providers import runtime_bundle, wheelhouse


def test_the_cache_is_per_user_and_can_be_moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(wheelhouse.CACHE_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(runtime_bundle.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert wheelhouse.user_cache("ssh-wheelhouse") == tmp_path / "home" / ".cache" / "gpustack-iac" / "ssh-wheelhouse"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert wheelhouse.user_cache("ssh-wheelhouse") == tmp_path / "xdg" / "gpustack-iac" / "ssh-wheelhouse"
    monkeypatch.setenv(wheelhouse.CACHE_DIR_ENV, str(tmp_path / "moved"))
    assert wheelhouse.user_cache("ssh-wheelhouse") == tmp_path / "moved" / "ssh-wheelhouse"
    assert runtime_bundle.cache_dir() == tmp_path / "moved" / "cloud-wheelhouse"
    monkeypatch.setenv(runtime_bundle.CACHE_ENV, str(tmp_path / "runtime"))
    assert runtime_bundle.cache_dir() == tmp_path / "runtime"


def _fake_build(target: Path, python: str, machine: str, requirements: list[str], cross: bool) -> None:
    (target / "gpustack_iac-0-py3-none-any.whl").write_bytes(b"wheel")


def test_a_cached_wheelhouse_is_reused_and_unused_ones_are_pruned(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    python, machine = wheelhouse.local_platform()
    builds: list[Path] = []
    monkeypatch.setattr(wheelhouse, "_build_into", lambda target, *a: (builds.append(target), _fake_build(target, *a)))
    stale, recent = tmp_path / "py3.11-x86_64-0.0.1-old", tmp_path / "py3.11-x86_64-0.0.2-recent"
    for entry, age in ((stale, wheelhouse.UNUSED_FOR_S + 60), (recent, 60)):
        entry.mkdir(parents=True)
        (entry / ".complete").write_text(entry.name)
        then = time.time() - age
        os.utime(entry / ".complete", (then, then))

    first = wheelhouse.build(tmp_path, python, machine)
    assert builds == [first.path] and [p.name for p in first.files()] == ["gpustack_iac-0-py3-none-any.whl"]
    assert not stale.exists() and recent.exists()  # unused for two weeks: removed; used lately: kept

    # A second stack (another state location, same user): the same wheelhouse, not built again.
    os.utime(first.path / ".complete", (0, 0))
    again = wheelhouse.build(tmp_path, python, machine)
    assert again == first and builds == [first.path]
    assert (first.path / ".complete").stat().st_mtime > time.time() - 60  # marked as used
