"""The code bundles of a stack's runs (`files:`, `repos:`) as resources: one per distinct bundle."""

from __future__ import annotations

from pathlib import Path

import pulumi

from gpustack_iac.providers.code import Code


def code_resources(archives: dict[str, tuple[Path, list[dict[str, str | None]]]], dest_root: Path) -> list[pulumi.Resource]:
    """`archives`: bundle key -> (the planned archive, the repos the host clones)."""
    return [Code(f"code-{key[:12]}", {"key": key, "archive": str(archive), "dest_root": str(dest_root), "clones": clones})
            for key, (archive, clones) in sorted(archives.items())]
