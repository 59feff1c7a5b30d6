"""Running the real sync (real Dagster runs into a real DuckDB file) and reading what a run left behind."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from entra_pipeline.definitions import build_defs, run_sync
from entra_pipeline.defs.jobs import SyncResult


class Sync:
    """Runs the real sync (the integration's source job, then the contacts job) for one config file
    and warehouse, on an ephemeral instance."""

    def __init__(self, config: Path, warehouse: Path) -> None:
        self.config, self.warehouse = config, warehouse
        self.instance = dg.DagsterInstance.ephemeral()

    def run(self, key: str, run_config: dict | None = None, preview: bool = False) -> SyncResult:
        defs = build_defs(self.config, self.warehouse)
        return run_sync(defs, key, self.instance, run_config=run_config, preview=preview)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def snapshot(self, content_only: bool = False) -> dict[str, list[str]]:
        """Every row of every table, for "nothing changed" assertions. ``content_only`` leaves out
        the run id and timestamps, which a successful re-read of the same directory renews, the run
        log (sync_run_stages and its view sync_runs), to which every committed stage adds a row, and
        delta_state, whose deltaLink every successful read renews."""
        if not self.warehouse.exists():
            return {}
        columns = "COLUMNS(lambda c: c NOT IN ('run_id', 'synced_at', 'created_at'))" if content_only else "*"
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
                      if not (content_only and r[0] in ("sync_run_stages", "sync_runs", "delta_state"))]
            return {t: sorted(map(repr, con.execute(f'SELECT {columns} FROM "{t}"').fetchall()))
                    for t in sorted(tables)}
        finally:
            con.close()

    def unchanged_except(self, before: dict, after: dict, renewed: set[str]) -> None:
        """Tables in ``renewed`` were rewritten by a step that succeeded; all others are byte-equal.
        A step that succeeded also logged itself (sync_run_stages, the sync_runs view over it), a
        raw step stored its delta state, and the incremental stages their bookkeeping."""
        if renewed:
            renewed = renewed | {"sync_run_stages", "sync_runs"}
        if renewed & {"raw_graph_users", "raw_graph_groups"}:
            renewed = renewed | {"delta_state"}
        # The incremental stages' bookkeeping: change logs, consumed positions, the mapped ids.
        if renewed & {"raw_graph_users", "raw_graph_groups", "mapped_contacts", "contacts"}:
            renewed = renewed | {"stage_state", "stage_changes"}
        if "mapped_contacts" in renewed:
            renewed = renewed | {"mapped_user_ids"}
        assert set(after) == set(before)
        for table in before:
            if table not in renewed:
                assert after[table] == before[table], table


def failure_messages(result: SyncResult) -> list[str]:
    """Each failed step's error with its causes, as one " | "-joined line."""
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        text = []
        while error is not None:
            text.append(error.message)
            error = error.cause
        messages.append(" | ".join(text))
    return messages


def materialized(result) -> set[str]:
    """Assets that did their work (an asset of the other source type does not run at all)."""
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def check_outcomes(result) -> dict[str, bool]:
    """Check name -> passed (a check of the other source type is not evaluated at all)."""
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def check_evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def step_metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def recorded_text(sync: Sync, results: list[SyncResult], caplog) -> dict[str, str]:
    """Everything the runs left behind, as text, for secret scans: the serialised Dagster event log
    (messages, metadata, errors), every captured log record, and every warehouse table."""
    events = "\n".join(dg.serialize_value(entry) for r in results for run_id in r.run_ids
                       for entry in sync.instance.all_logs(run_id))
    logs = "\n".join(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}" for record in caplog.records)
    con = duckdb.connect(str(sync.warehouse), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        warehouse = "\n".join(repr(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)
    finally:
        con.close()
    return {"event log": events, "log records": logs, "warehouse": warehouse}
