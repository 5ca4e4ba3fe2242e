"""Layering rules that reviewers would otherwise have to check by eye."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app" / "zoodesk"
QT_MODULES = ("PySide6", "shiboken6", "superqt", "qtpy", "PyQt5", "PyQt6")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_nothing_outside_gui_imports_qt() -> None:
    offenders = []
    for path in APP.rglob("*.py"):
        if "gui" in path.relative_to(APP).parts:
            continue
        for name in _imported_modules(path):
            if name.split(".")[0] in QT_MODULES:
                offenders.append(f"{path.relative_to(APP)} imports {name}")
    assert offenders == []


def test_import_linter_contract_holds() -> None:
    # The same rule through import-linter, which also sees indirect imports.
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], capture_output=True, text=True, cwd=APP.parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Only zoodesk.gui imports Qt KEPT" in result.stdout


def test_core_imports_without_qt_installed() -> None:
    # Importing the engine must not pull in Qt, even indirectly.
    code = (
        "import sys, zoodesk.cli, zoodesk.inference.predict, zoodesk.batch.runner;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _zoodesk_imports(path: Path, known: set[str]) -> set[str]:
    """zoodesk modules that ``path`` imports, at its top or lazily; not those for typing."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known}


def test_no_import_cycles_between_modules() -> None:
    paths = {_module_name(p): p for p in APP.rglob("*.py")}
    known = set(paths)
    graph = {name: _zoodesk_imports(path, known) for name, path in paths.items()}
    # A package's __init__ importing its own modules is how packages work: only
    # cycles between modules count.  Lazy imports count too: they hide a cycle, they
    # do not remove it.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(f"{d}.") or d == name}
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str], on_stack: set[str], done: set[str]) -> None:
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep in on_stack:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in done:
                walk(dep, stack, on_stack, done)
        on_stack.discard(node)
        stack.pop()
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            walk(name, [], set(), done)
    assert cycles == [], cycles


def test_the_layers_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], capture_output=True, text=True, cwd=APP.parents[1])
    assert "Layers: models at the bottom" in result.stdout
    assert "BROKEN" not in result.stdout, result.stdout
