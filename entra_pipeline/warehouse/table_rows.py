"""Reading and writing an integration's rows in any warehouse table: the building blocks the
topic modules (raw tables, contacts, lists, ...) share. Every table has an ``integration``
column, and a stage only ever replaces its own integration's rows.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Iterable

import pandas as pd

from entra_pipeline.warehouse import schema as s

#: The name a DataFrame is registered under while it is inserted (one at a time per connection).
INCOMING = "_incoming"


def utc_now() -> datetime:
    """The time written into run and change columns (``synced_at``, ``created_at``, ...)."""
    return datetime.now(timezone.utc)


def replace_rows(con, table: str, integration: str, frame: pd.DataFrame) -> int:
    """Replace an integration's rows of ``table`` with ``frame``; the rows written."""
    con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])
    return insert_rows(con, table, frame)


def insert_rows(con, table: str, frame: pd.DataFrame) -> int:
    """Append ``frame`` (its columns by name) to ``table``; the rows written."""
    if frame.empty:
        return 0
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    con.register(INCOMING, frame)
    # No unregister on failure: in an aborted transaction it would raise and hide the real error.
    con.execute(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM {INCOMING}')
    con.unregister(INCOMING)
    return len(frame)


def run_frame(data: list[dict] | dict[str, list], columns: list[str], integration: str, run_id: str) -> pd.DataFrame:
    """Rows (a list of dicts) or columns (a dict of lists) plus the integration and run columns."""
    # dtype=object: pandas would turn integers mixed with None into floats ("42.0").
    frame = pd.DataFrame(data, columns=columns, dtype=object)
    frame.insert(0, "integration", integration)
    frame["run_id"] = run_id
    frame["synced_at"] = utc_now()
    return frame


def id_table(con, name: str, ids: Iterable[str]) -> None:
    """A temporary one-column table ``name(id)`` holding ``ids`` (``name`` is a constant of the
    calling module, never input): queries filter with ``IN (SELECT id FROM name)``."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT unnest(?::VARCHAR[]) AS id", [sorted(set(ids))])


def delete_ids(con, table: str, integration: str, column: str, ids: Iterable[str]) -> None:
    """Delete an integration's rows of ``table`` whose ``column`` is one of ``ids``."""
    id_table(con, "_delete_ids", ids)
    con.execute(f'DELETE FROM "{table}" WHERE integration = ? AND "{column}" IN (SELECT id FROM _delete_ids)',
                [integration])


def stored_json(con, table: str, integration: str, ids: list[str] | None) -> dict[str, dict]:
    """id -> parsed JSON of an integration's raw rows (only ``ids``, or all with None)."""
    if ids is None:
        rows = con.execute(f'SELECT id, data FROM "{table}" WHERE integration = ?', [integration]).fetchall()
    else:
        id_table(con, "_stored_ids", ids)
        rows = con.execute(f'SELECT id, data FROM "{table}" WHERE integration = ? '
                           "AND id IN (SELECT id FROM _stored_ids)", [integration]).fetchall()
    return {i: json.loads(d) for i, d in rows}


def count_rows(con, table: str, integration: str) -> int:
    """How many rows an integration has in ``table`` (all of them in a table of the merged
    directory, whose rows are everyone's)."""
    s.ensure_schema(con)
    if table not in s.INTEGRATION_TABLE_NAMES:
        return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return con.execute(f'SELECT count(*) FROM "{table}" WHERE integration = ?', [integration]).fetchone()[0]


def sample_rows(con, table: str, integration: str, columns: list[str], limit: int = 10) -> list[dict]:
    """The first rows of an integration (of everyone in a table of the merged directory), by its
    first column (an id), as dicts (for previews)."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    if table not in s.INTEGRATION_TABLE_NAMES:
        cursor = con.execute(f'SELECT {quoted} FROM "{table}" ORDER BY 1 LIMIT ?', [limit])
    else:
        cursor = con.execute(f'SELECT {quoted} FROM "{table}" WHERE integration = ? ORDER BY 1 LIMIT ?',
                             [integration, limit])
    return [dict(zip(columns, row)) for row in cursor.fetchall()]
