"""Imports are one-way: every import of a library package is one that docs/architecture.md's
package table allows, and that table only lets a package import the packages above it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "architecture.md"


def _names(cell: str) -> list[str]:
    """The package names in a table cell: backticked, first dotted part, no trailing ``/``."""
    return [name.split(".")[0].strip("/") for name in re.findall(r"`([^`]+)`", cell)]


def allowed_imports(table: str) -> tuple[list[list[str]], dict[str, set[str]]]:
    """The table's rows of packages in order and, per package, those it may import (its row's
    ``imports from dm2gal`` cell and its own row; "everything above it" is every earlier
    row)."""
    rows: list[list[str]] = []
    allowed: dict[str, set[str]] = {}
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        packages, _, imports = (cell.strip() for cell in line.strip("|").split("|"))
        above = {name for row in rows for name in row}
        imports = imports.split("(")[0]  # a note in brackets is about the command modules
        ok = above if "everything above it" in imports else set(_names(imports))
        for name in _names(packages):
            allowed[name] = ok | set(_names(packages))
        rows.append(_names(packages))
    return rows, allowed


def library_imports(package_dir: Path) -> list[tuple[Path, str]]:
    """``(file, imported dm2gal package)`` for every absolute import in ``package_dir``, at
    module level or inside functions, of a package other than its own."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "dm2gal" and len(parts) > 1 and parts[1] != package_dir.name:
                    found.append((path, parts[1]))
    return found


def test_the_table_lets_a_package_import_only_packages_above_it():
    rows, allowed = allowed_imports(TABLE.read_text())
    assert {"io", "data", "models", "stats", "infer", "train", "eval"} <= set(allowed)
    for i, row in enumerate(rows):
        later = {name for below in rows[i + 1 :] for name in below}
        for package in row:
            assert not allowed[package] & later, (package, sorted(allowed[package] & later))


def test_every_library_import_is_one_the_table_allows():
    _, allowed = allowed_imports(TABLE.read_text())
    packages = [p for p in sorted((ROOT / "dm2gal").iterdir()) if (p / "__init__.py").is_file()]
    assert {p.name for p in packages} <= set(allowed), "a package missing from the table"
    bad = [
        f"{path.relative_to(ROOT)} imports dm2gal.{target}"
        for package in packages
        for path, target in library_imports(package)
        if path.name != "__main__.py" and target not in allowed[package.name]
    ]
    assert bad == []


def test_an_upward_import_is_found(tmp_path: Path):
    """The check sees an import of a package the table does not allow, even inside a
    function."""
    package = tmp_path / "train"
    package.mkdir()
    (package / "x.py").write_text("def f():\n    from dm2gal.eval.plots import save_png\n")
    _, allowed = allowed_imports(TABLE.read_text())
    found = library_imports(package)
    assert found == [(package / "x.py", "eval")] and "eval" not in allowed["train"]
