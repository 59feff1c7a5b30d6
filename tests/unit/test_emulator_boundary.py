"""The demo tenant stands in for Microsoft's and Workday's services: it must not lean on the
pipeline it is there to test, so no emulator module imports another ``entra_pipeline`` module."""

from __future__ import annotations

import ast
from pathlib import Path

import entra_pipeline.emulator as emulator_package

EMULATOR = Path(emulator_package.__file__).resolve().parent


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = "entra_pipeline." + ".".join(path.relative_to(EMULATOR.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module)
    return names


def test_no_emulator_module_imports_the_pipeline():
    modules = sorted(EMULATOR.rglob("*.py"))
    assert len(modules) > 20  # the walk found the package, faces included
    offending = [
        f"{path.relative_to(EMULATOR.parent)} imports {name}"
        for path in modules
        for name in _imported_modules(path)
        if name.split(".")[0] == "entra_pipeline" and not name.startswith("entra_pipeline.emulator")
    ]
    assert offending == []


def test_the_check_resolves_relative_imports():
    # Relative imports resolve to absolute names, so one reaching out of the package would show.
    faces = EMULATOR / "faces" / "graph.py"
    assert "entra_pipeline.emulator.odata" in _imported_modules(faces)
    assert any(name == "entra_pipeline.emulator" for name in _imported_modules(EMULATOR / "__main__.py"))
