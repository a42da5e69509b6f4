"""Imports run one way, as docs/architecture.md says, and no module imports itself in a circle.

The allowed edges are read from the "may import" table in docs/architecture.md, so the page and
the code cannot drift apart: an import the table does not allow fails here, naming the module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Installed package name → source folder.
ROOTS = {"gpustack_iac": REPO / "gpustack_iac"}
# The package's own __init__ holds only __version__: anything may read it.
VERSION_MODULE = "gpustack_iac"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports (anywhere in the file, TYPE_CHECKING included)."""
    out: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parent + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def _component(module: str) -> str:
    """`gpustack_iac.engine.embedded.diff` → `engine`; `gpustack_iac.stacks.fleet` → `stacks`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else VERSION_MODULE


def _documented_rules() -> dict[str, set[str]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Dependency direction", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            names = re.findall(r"`([\w.]+)`", cells[0])
            # Words in parenthetical notes explain an edge; they grant nothing.
            allowed = set(re.findall(r"`([\w.]+)`", re.sub(r"\([^)]*\)", "", cells[1])))
            for n in names:
                rules[n] = allowed
    assert rules, "docs/architecture.md lost its 'may import' table"
    return rules


def test_every_import_follows_the_documented_direction() -> None:
    modules = _modules()
    rules = _documented_rules()
    wrong = []
    for name, path in sorted(modules.items()):
        if name == VERSION_MODULE:
            assert not _imports(name, path, modules), "gpustack_iac/__init__.py should only hold __version__"
            continue
        mine = _component(name)
        assert mine in rules, f"{name}: component {mine!r} is missing from docs/architecture.md's table"
        for target in sorted(_imports(name, path, modules)):
            theirs = _component(target)
            relative = target.split(".", 1)[1] if "." in target else target
            if theirs in (mine, VERSION_MODULE) or any(relative == a or relative.startswith(a + ".") for a in rules[mine]):
                continue
            wrong.append(f"{name} imports {target} ({mine} → {theirs} is not in docs/architecture.md)")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_in_a_circle() -> None:
    modules = _modules()
    edges = {name: _imports(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    assert not circles, "import circles:\n" + "\n".join(" ↔ ".join(c) for c in circles)


def test_the_check_sees_real_edges() -> None:
    modules = _modules()
    assert "gpustack_iac.engine.factory" in _imports("gpustack_iac.workspace", modules["gpustack_iac.workspace"], modules)
    assert _component("gpustack_iac.stacks.fleet") == "stacks" and _component("gpustack_iac.engine.wire") == "engine"
