"""The run log: one sync_run_stages row per committed stage of every sync run (the sync_runs
view sums them per run), written in the stage's own transaction.
"""

from __future__ import annotations

from datetime import datetime

from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.table_rows import utc_now


def record_stage(con, integration: str, run_id: str, stage: str, started_at: datetime, *,
                 read_mode: str | None = None, read_reason: str | None = None, changes_read: int | None = None,
                 added: int | None = None, updated: int | None = None, removed: int | None = None,
                 graph_requests: int | None = None, graph_bytes: int | None = None,
                 list_members_removed: int | None = None) -> None:
    """One sync_run_stages row (a re-executed step replaces its row)."""
    s.ensure_schema(con)
    con.execute(f'DELETE FROM "{s.SYNC_RUN_STAGES}" WHERE integration = ? AND run_id = ? AND stage = ?',
                [integration, run_id, stage])
    # Columns by name: a warehouse made by an older version has the newer columns at its end.
    con.execute(f'INSERT INTO "{s.SYNC_RUN_STAGES}" (integration, run_id, stage, started_at, finished_at, '
                "read_mode, read_reason, changes_read, added, updated, removed, graph_requests, graph_bytes, "
                "list_members_removed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [integration, run_id, stage, started_at, utc_now(), read_mode, read_reason, changes_read,
                 added, updated, removed, graph_requests, graph_bytes, list_members_removed])
