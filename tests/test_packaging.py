"""The wheel must carry every package: setuptools finds them under gpustack_iac/ (no package-dir remapping)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    from setuptools import find_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(find_packages(str(REPO), include=config["tool"]["setuptools"]["packages"]["find"]["include"]))


def _on_disk() -> set[str]:
    found = set()
    roots = {"gpustack_iac": REPO / "gpustack_iac"}
    for prefix, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((prefix, *rel)))
    return found


def test_every_package_is_declared() -> None:
    missing = _on_disk() - _declared()
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_no_declared_package_is_missing() -> None:
    assert not (_declared() - _on_disk())


def test_console_script_and_module_entry_point() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["project"]["scripts"]["gpustack-iac"] == "gpustack_iac.cli:main"
    assert (REPO / "gpustack_iac" / "__main__.py").exists()


def test_pulumi_is_a_bounded_range() -> None:
    # A range of SDK minors, not one release: users' provider SDKs can move within it. Bounded above,
    # because the embedded engine's private hooks were verified only up to its top
    # (tests/engine/test_sdk_hooks.py checks it equals sdk_hooks.SUPPORTED).
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in config["project"]["dependencies"] if d.startswith("pulumi")]
    assert len(pins) == 1 and ">=" in pins[0] and "<" in pins[0].replace("<=", "") and "==" not in pins[0], pins


def test_the_python_floor_is_one_the_code_parses_under() -> None:
    # requires-python must be true: the code and the tests use 3.11 (asyncio.timeout, tomllib), and
    # nothing newer than the floor's grammar.
    import ast

    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == ">=3.11"
    for root in ("gpustack_iac", "tests", "bench"):
        for path in (REPO / root).rglob("*.py"):
            ast.parse(path.read_text(), filename=str(path), feature_version=(3, 11))
