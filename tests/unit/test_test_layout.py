"""The test suite's own rules: test modules share helpers only through tests/support (never by
importing another test module or conftest), and nothing leans on Dagster's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import reaches a sibling test module or package.
                modules.add("." * node.level + (node.module or ""))
            else:
                modules.add(node.module or "")
    return modules


def test_no_test_module_imports_another_or_conftest():
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        bad = {m for m in imported_modules(path)
               if m.startswith(".") or m.split(".")[-1].startswith("test_") or m.split(".")[-1] == "conftest"}
        if bad:
            offenders[str(path.relative_to(TESTS))] = sorted(bad)
    assert offenders == {}


def test_nothing_imports_private_dagster_modules():
    roots = [TESTS, TESTS.parent / "entra_pipeline"]
    offenders = {}
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        bad = {m for m in imported_modules(path) if m == "dagster._" or m.startswith("dagster._")}
        if bad:
            offenders[str(path.relative_to(TESTS.parent))] = sorted(bad)
    assert offenders == {}


def test_the_check_sees_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from conftest import x\nimport tests.e2e.test_sync\n"
                     "def f():\n    from dagster._serdes import serialize_value\n    from . import helpers\n")
    assert imported_modules(probe) == {"conftest", "tests.e2e.test_sync", "dagster._serdes", "."}
