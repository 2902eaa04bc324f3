"""No file imports another package's private ``_module`` (tests and benchmarks included).

import-linter holds the packages to this (pyproject.toml); tests/ is not a package it can see, so
this walks every Python file of the repository instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = ("bench", "connectors", "dicom_facade", "federation", "pacsfed", "schema", "tests", "web")


def _python_files() -> list[Path]:
    return sorted(path for tree in TREES for path in (REPO / tree).rglob("*.py"))


def _imported_modules(tree: ast.Module) -> list[str]:
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
            modules.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _private_parent(module: str) -> str | None:
    """The package that owns the first private segment of ``module``, if it is one of ours."""
    parts = module.split(".")
    if parts[0] not in TREES:
        return None
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            path = REPO.joinpath(*parts[: index + 1])
            if path.with_suffix(".py").is_file() or path.is_dir():
                return ".".join(parts[:index])
            return None
    return None


def test_no_file_imports_a_private_module_of_another_package() -> None:
    offences = []
    for path in _python_files():
        here = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            owner = _private_parent(module)
            if owner is not None and not here.startswith(owner + "."):
                offences.append(f"{here} imports {module}")
    assert offences == []


def test_the_check_sees_a_private_import() -> None:
    tree = ast.parse("from connectors._association_pool import AssociationPool\n")
    owners = [_private_parent(module) for module in _imported_modules(tree)]
    assert "connectors" in owners
