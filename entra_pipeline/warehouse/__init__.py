"""The DuckDB contact warehouse: table definitions and SQL. No Dagster here."""

import os
from pathlib import Path

from entra_pipeline.config import PROJECT_ROOT

WAREHOUSE_PATH_ENV = "ENTRA_PIPELINE_WAREHOUSE"
DEFAULT_WAREHOUSE_PATH = PROJECT_ROOT / "data" / "warehouse.duckdb"


def warehouse_path() -> Path:
    return Path(os.environ.get(WAREHOUSE_PATH_ENV) or DEFAULT_WAREHOUSE_PATH)
