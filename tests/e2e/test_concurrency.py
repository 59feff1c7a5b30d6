"""Several integrations syncing at once, in separate processes, into one warehouse file, while an
analyst's read-only session keeps querying it: nobody sees a lock error, nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from entra_pipeline.warehouse.connection import connect

from tests.support.expected import expected_contacts
from tests.support.integrations import integration, write_config
from tests.support.tenant import SECRET, SECRET_ENV


KEYS = ["alpha", "beta", "gamma", "delta"]
RUN = """
import sys, dagster as dg
from entra_pipeline.definitions import build_defs, run_sync
defs = build_defs(sys.argv[1], sys.argv[2])
result = run_sync(defs, sys.argv[3], dg.DagsterInstance.ephemeral())
sys.exit(0 if result.success else 1)
"""


def test_four_integrations_sync_at_once_while_an_analyst_reads(tmp_path, emulator, directory):
    config = write_config(tmp_path / "integrations.yaml", *(integration(key, emulator) for key in KEYS))
    warehouse = tmp_path / "warehouse.duckdb"
    env = {**os.environ, SECRET_ENV: SECRET}
    reads, errors, attempts, stop = [], [], [], threading.Event()

    def analyst() -> None:
        while not stop.is_set():
            try:
                if warehouse.exists():
                    attempts.append(time.monotonic())
                    con = connect(warehouse, read_only=True, wait_seconds=120)
                    try:
                        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
                        reads.append(con.execute("SELECT count(*) FROM contacts").fetchone()[0]
                                     if "contacts" in tables else 0)
                    finally:
                        con.close()
            except Exception as exc:  # noqa: BLE001 - every error is a finding
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)

    reader = threading.Thread(target=analyst)
    reader.start()
    try:
        syncs = [subprocess.Popen([sys.executable, "-c", RUN, str(config), str(warehouse), key], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for key in KEYS]
        outcomes = [(proc.wait(timeout=600), proc.stderr.read()) for proc in syncs]
        syncs_done = time.monotonic()
    finally:
        stop.set()
        reader.join()

    assert [code for code, _ in outcomes] == [0] * len(KEYS), [err[-2000:] for code, err in outcomes if code]
    assert not any("lock" in err.lower() and "error" in err.lower() for _, err in outcomes)
    assert errors == []
    # The analyst tried to read while the syncs wrote, waited for them instead of failing, and read
    # the warehouse (how often it got in between the writers depends on timing).
    assert any(started < syncs_done for started in attempts)
    assert reads
    con = connect(warehouse, read_only=True)
    try:
        for key in KEYS:
            rows = dict(con.execute("SELECT source_id, contact_id FROM contacts WHERE integration = ?",
                                    [key]).fetchall())
            assert rows == expected_contacts(directory), key
            assert con.execute("SELECT count(*) FROM sync_runs WHERE integration = ?", [key]).fetchone()[0] == 1
    finally:
        con.close()
