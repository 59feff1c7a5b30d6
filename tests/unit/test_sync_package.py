"""The stage logic in entra_pipeline.sync runs without Dagster: no module there imports it."""

import ast
import subprocess
import sys
from pathlib import Path

SYNC = Path(__file__).resolve().parents[2] / "entra_pipeline" / "sync"


def test_no_sync_module_imports_dagster():
    for path in sorted(SYNC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "dagster" or n.startswith(("dagster.", "dagster_")) for n in names), path.name


def test_importing_every_stage_loads_no_dagster():
    modules = ", ".join(f"entra_pipeline.sync.{p.stem}" for p in sorted(SYNC.glob("*.py")) if p.stem != "__init__")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
