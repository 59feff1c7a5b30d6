"""Deleting an integration is explicit and exact: its rows go from every table and nothing else
changes; dropping it from the configuration alone deletes nothing and is reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from tests.support.expected import expected_contacts
from tests.support.integrations import integration, write_config
from tests.support.runs import Sync, failure_messages
from tests.support.tenant import SECRET, SECRET_ENV


ROOT = Path(__file__).resolve().parents[2]


def rows_of(warehouse: Path, key: str) -> dict[str, list[str]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        # The tables whose rows belong to an integration (the merged directory's rows are people).
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_columns() WHERE schema_name = 'main' "
                                            "AND column_name = 'integration' AND NOT internal "
                                            "AND table_name IN (SELECT table_name FROM duckdb_tables())").fetchall()]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}" WHERE integration = ?', [key]).fetchall()))
                for t in sorted(tables)}
    finally:
        con.close()


def cli(config: Path, warehouse: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENTRA_PIPELINE_CONFIG": str(config), "ENTRA_PIPELINE_WAREHOUSE": str(warehouse),
           SECRET_ENV: SECRET}
    return subprocess.run([sys.executable, "-m", "entra_pipeline", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_dropping_an_integration_from_the_file_warns_and_deleting_it_removes_exactly_its_rows(
        tmp_path, secret_env, emulator, directory):
    warehouse = tmp_path / "warehouse.duckdb"
    both = write_config(tmp_path / "both.yaml", integration("acme", emulator), integration("other", emulator))
    for key in ("acme", "other"):
        assert Sync(both, warehouse).run(key).success
    acme_before, other_before = rows_of(warehouse, "acme"), rows_of(warehouse, "other")
    assert len(acme_before["contacts"]) == len(expected_contacts(directory))

    # Removed from the file: nothing is deleted, the next sync of another integration warns.
    only_other = write_config(tmp_path / "other.yaml", integration("other", emulator))
    result = Sync(only_other, warehouse).run("other")
    assert result.success, failure_messages(result)
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_orphaned_integrations"]
    assert not check.passed and check.severity.value == "WARN"
    assert check.description == (
        f"the warehouse holds integrations that are not configured: 'acme' ({len(acme_before['contacts']):,} "
        "contacts); delete them with python -m entra_pipeline delete-integration KEY --confirm KEY, or configure "
        "them again")
    assert rows_of(warehouse, "acme") == acme_before
    other_before = rows_of(warehouse, "other")

    # Without the confirmation nothing happens.
    proc = cli(only_other, warehouse, "delete-integration", "acme")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"integration 'acme' holds {len(acme_before['contacts']):,} contacts in {warehouse}; this removes its "
        "contacts, lists, errors, history and delta state for good. Repeat the key to confirm: --confirm acme")
    assert rows_of(warehouse, "acme") == acme_before
    assert cli(only_other, warehouse, "delete-integration", "acme", "--confirm", "other").returncode == 2
    assert cli(only_other, warehouse, "delete-integration", "nope", "--confirm", "nope").returncode == 2

    proc = cli(only_other, warehouse, "delete-integration", "acme", "--confirm", "acme")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("deleted integration 'acme': ")
    assert all(rows == [] for rows in rows_of(warehouse, "acme").values())
    assert rows_of(warehouse, "other") == other_before  # byte-identical
    result = Sync(only_other, warehouse).run("other")
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_orphaned_integrations"]
    assert check.passed
    # The merged directory is everyone's: the next merge holds only the integrations left.
    assert Sync(only_other, warehouse).query("SELECT DISTINCT integrations FROM all_contacts") == [(["other"],)]
