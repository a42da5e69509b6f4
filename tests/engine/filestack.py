"""Helpers for engine tests: programs of File resources, and providers that wait or fail on cue.

Run as a script, it applies a program of N files in a subprocess (for the kill -9 and lock tests).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi

from gpustack_iac.engine.embedded.engine import EmbeddedEngine
from gpustack_iac.engine.stores import open_store
from gpustack_iac.errors import GpustackError
from gpustack_iac.providers.file import File, FileProvider

PROJECT = "proj"
STACK = "dev"
GATE_WAIT_SECONDS = 120.0


class GatedFileProvider(FileProvider):
    """Creates files like FileProvider, but stops before creating a gated one until `<gate>/go` exists.

    It first writes `<gate>/reached-<file name>`, so a test knows exactly where the apply stands.
    """

    def __init__(self, gate_dir: str, gated: list[str], gated_deletes: list[str] | None = None) -> None:
        super().__init__()
        self.gate_dir = gate_dir
        self.gated = list(gated)
        self.gated_deletes = list(gated_deletes or [])

    def _wait(self, marker: str) -> None:
        gate = Path(self.gate_dir)
        (gate / marker).write_text("1")
        deadline = time.monotonic() + GATE_WAIT_SECONDS
        while not (gate / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {gate} never opened")
            time.sleep(0.02)

    def create(self, props: dict[str, Any]) -> Any:
        name = Path(props["path"]).name
        if name in self.gated:
            self._wait(f"reached-{name}")
        return super().create(props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        name = Path(id_).name
        if name in self.gated_deletes:
            self._wait(f"reached-delete-{name}")
        super().delete(id_, props)


class FailingFileProvider(FileProvider):
    """Fails to create the files named in `failing`; fails deletes while the file `delete_switch` exists."""

    def __init__(self, failing: list[str], delete_switch: str = "") -> None:
        super().__init__()
        self.failing = list(failing)
        self.delete_switch = delete_switch

    def create(self, props: dict[str, Any]) -> Any:
        if Path(props["path"]).name in self.failing:
            raise RuntimeError(f"refusing to create {Path(props['path']).name}")
        return super().create(props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if self.delete_switch and Path(self.delete_switch).exists():
            raise RuntimeError(f"refusing to delete {Path(id_).name}")
        super().delete(id_, props)


class RecordingFileProvider(FileProvider):
    """Appends every create/update/delete to a log file, to check the order operations ran in."""

    def __init__(self, log_path: str) -> None:
        super().__init__()
        self.log_path = log_path

    def _record(self, op: str, path: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{op} {Path(path).name}\n")

    def create(self, props: dict[str, Any]) -> Any:
        self._record("create", props["path"])
        return super().create(props)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        self._record("update", news["path"])
        return super().update(id_, olds, news)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self._record("delete", id_)
        super().delete(id_, props)


def open_engine(state: Path | str, passphrase: str = "test-passphrase") -> EmbeddedEngine:
    """An engine on the state at `state`: a directory, or a URL (remote state)."""
    return EmbeddedEngine(PROJECT, STACK, open_store(str(state), PROJECT, STACK, passphrase=passphrase))


def files_program(
    files_dir: Path,
    contents: dict[str, str],
    provider: FileProvider | None = None,
    opts: dict[str, pulumi.ResourceOptions] | None = None,
    suffix: str = "",
) -> Callable[[], None]:
    """A program declaring one File per entry (resource name = file name; `suffix` moves the files)."""

    def program() -> None:
        for name, content in contents.items():
            File(
                name,
                path=str(files_dir / f"{name}{suffix}"),
                content=content,
                provider=provider,
                opts=(opts or {}).get(name),
            )

    return program


def numbered(n: int) -> dict[str, str]:
    return {f"f{i:03d}.txt": f"content {i}\n" for i in range(n)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--files", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--gate", required=True)
    parser.add_argument("--gated", action="append", default=[])
    parser.add_argument("--gated-delete", action="append", default=[])
    parser.add_argument("--suffix", default="")
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args(argv)
    engine = open_engine(args.state)
    engine.parallel = args.parallel
    provider = GatedFileProvider(args.gate, args.gated, args.gated_delete)
    program = files_program(Path(args.files), numbered(args.count), provider, suffix=args.suffix)
    try:
        result = engine.up(program, refresh=True)
    except GpustackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0 if result.ok else 1


if __name__ == "__main__":
    # Re-import under the module's own name: a provider class pickled from `__main__` would be
    # pickled by value and could not be loaded back by the test process.
    import filestack

    raise SystemExit(filestack.main())
