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
