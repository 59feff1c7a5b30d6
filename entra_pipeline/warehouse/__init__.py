"""The DuckDB contact warehouse: table definitions and SQL. No Dagster here.

DuckDB lets one process write a database file, and other processes open it only while nobody
writes. The sync keeps its connections short (each stage opens the file, writes one transaction
and closes it; Graph is read with the file closed), and both sides wait for the other instead of
failing: ``connect`` retries while another process holds the lock.
"""

import os
import random
import time
from pathlib import Path

import duckdb

from entra_pipeline.config import PROJECT_ROOT

WAREHOUSE_PATH_ENV = "ENTRA_PIPELINE_WAREHOUSE"
DEFAULT_WAREHOUSE_PATH = PROJECT_ROOT / "data" / "warehouse.duckdb"
#: How long a connection waits for another process's lock on the file before it gives up.
LOCK_WAIT_SECONDS = 300.0


def warehouse_path() -> Path:
    return Path(os.environ.get(WAREHOUSE_PATH_ENV) or DEFAULT_WAREHOUSE_PATH)


def _locked(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def connect(database: str | Path, *, read_only: bool = False, wait_seconds: float = LOCK_WAIT_SECONDS,
            config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection, waiting (up to ``wait_seconds``, backing off from 50 ms to 2 s) while
    another process holds the file's lock; after that the lock error is raised, naming the file."""
    deadline = time.monotonic() + wait_seconds
    pause = 0.05
    while True:
        try:
            return duckdb.connect(str(database), read_only=read_only, config=config or {})
        except duckdb.IOException as exc:
            if not _locked(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause + random.uniform(0, pause))
        pause = min(pause * 2, 2.0)
