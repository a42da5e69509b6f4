"""A file managed as a Pulumi dynamic resource: the simplest real backend, used by tests and examples.

The provider lives in this importable module so dill pickles it by reference (short and stable),
never by value.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.dynamic.dynamic import PROVIDER_KEY, serialize_provider

DEFAULT_MODE = 0o644
_READ_CHUNK = 1 << 20


def _mode(value: Any) -> int:
    # Inputs travel as a protobuf Struct, so an int mode arrives as a float.
    return int(value) if value is not None else DEFAULT_MODE


def _is_clean_absolute(path: str) -> bool:
    """Is `path` already what pathlib makes of it (absolute, no empty or "." parts, no trailing slash)?"""
    return (
        os.sep == "/"
        and path.startswith("/")
        and "//" not in path
        and "/./" not in path
        and not path.endswith(("/", "/."))
    )


def _absolute(path: str) -> str:
    # str(Path(path).absolute()), without building a Path in the common case: check, diff and read
    # run for every file of every plan.
    return path if _is_clean_absolute(path) else str(Path(path).absolute())


def _write_atomically(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # newline="": the bytes on disk are exactly `content`, as `read` reads them back.
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _outputs(path: str, content: str, mode: int) -> dict[str, Any]:
    data = content.encode("utf-8")
    return {
        "path": path,
        "content": content,
        "mode": mode,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


class FileProvider(ResourceProvider):
    """Create/read/diff/update/delete one text file; its id is the absolute path."""

    # The provider captures no secrets, so its pickle need not be encrypted in every state entry.
    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures: list[CheckFailure] = []
        path = news.get("path")
        if not isinstance(path, str) or not path:
            failures.append(CheckFailure("path", "expected a non-empty file path"))
        content = news.get("content", "")
        if not isinstance(content, str):
            failures.append(CheckFailure("content", "expected text"))
        try:
            mode = _mode(news.get("mode"))
            if not 0 <= mode <= 0o7777:
                failures.append(CheckFailure("mode", f"expected a permission mode 0..0o7777, got {mode}"))
        except (TypeError, ValueError):
            failures.append(CheckFailure("mode", "expected an integer permission mode"))
            mode = DEFAULT_MODE
        inputs = dict(news)
        if not failures:
            inputs["path"] = _absolute(str(path))
            inputs["content"] = content
            inputs["mode"] = mode
        return CheckResult(inputs, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        path = Path(props["path"]).absolute()
        content = str(props.get("content", ""))
        mode = _mode(props.get("mode"))
        _write_atomically(path, content, mode)
        return CreateResult(str(path), _outputs(str(path), content, mode))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # One open, fstat and read per file: a refresh reads every managed file, so this is the
        # per-resource cost of refreshing. The bytes are decoded as they are (no newline translation),
        # so the content and its sha256 are those of the file on disk.
        try:
            fd = os.open(id_, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            # The file vanished: an empty id tells the engine the resource is gone.
            return ReadResult(None, {})
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            chunks: list[bytes] = []
            while chunk := os.read(fd, _READ_CHUNK):
                chunks.append(chunk)
        finally:
            os.close(fd)
        content = b"".join(chunks).decode("utf-8")
        return ReadResult(id_, _outputs(id_ if _is_clean_absolute(id_) else str(Path(id_)), content, mode))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # olds are the last known outputs (refreshed when the engine refreshed), so drift shows here.
        replaces = ["path"] if str(olds.get("path")) != _absolute(str(news.get("path"))) else []
        changed = bool(replaces)
        if olds.get("content") != news.get("content", ""):
            changed = True
        if _mode(olds.get("mode")) != _mode(news.get("mode")):
            changed = True
        return DiffResult(changes=changed, replaces=replaces, stables=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        path = Path(news["path"]).absolute()
        content = str(news.get("content", ""))
        mode = _mode(news.get("mode"))
        _write_atomically(path, content, mode)
        return UpdateResult(_outputs(str(path), content, mode))

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        # Deleting a file that is already gone succeeds, so a retried delete after a crash is safe.
        Path(id_).unlink(missing_ok=True)


class File(pulumi.dynamic.Resource, module="gpustack", name="File"):
    """A text file at `path` with `content` and permission `mode`; outputs add `sha256` and `size`."""

    # For type checkers only: the SDK evaluates a resource class's annotations again for every
    # resource it registers (a tenth of a large preview), and these plain values need no translation.
    if TYPE_CHECKING:
        path: pulumi.Output[str]
        content: pulumi.Output[str]
        mode: pulumi.Output[int]
        sha256: pulumi.Output[str]
        size: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        path: pulumi.Input[str],
        content: pulumi.Input[str],
        mode: pulumi.Input[int] = DEFAULT_MODE,
        opts: pulumi.ResourceOptions | None = None,
        provider: ResourceProvider | None = None,
    ) -> None:
        props: dict[str, Any] = {"path": path, "content": content, "mode": mode, "sha256": None, "size": None}
        if provider is not None:
            super().__init__(provider, name, props, opts)
            return
        # The default provider is stateless: pickle it once, not once per file (dill is the
        # largest cost of declaring many files). This is what dynamic.Resource.__init__ does.
        props[PROVIDER_KEY] = _default_provider_pickle()
        pulumi.CustomResource.__init__(self, f"pulumi-python:{self._resource_type_name}", name, props, opts)


@functools.cache
def _default_provider_pickle() -> str:
    return serialize_provider(FileProvider())
