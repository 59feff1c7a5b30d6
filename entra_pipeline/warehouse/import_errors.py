"""The import_errors table: per-record problems each stage found in the latest sync of an
integration. A stage replaces its own errors in the transaction that writes its rows.
"""

from __future__ import annotations

from typing import Iterable

from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.table_rows import id_table, utc_now


def _insert_issues(con, integration: str, run_id: str, issues: Iterable[ImportIssue]) -> int:
    issues = list(issues)
    if issues:
        # One statement over column lists: a row-by-row executemany costs seconds for thousands of errors.
        columns = [[getattr(i, name) for i in issues] for name in ("stage", "record", "field", "code", "message")]
        con.execute(
            f'INSERT INTO "{s.IMPORT_ERRORS}" (integration, run_id, stage, record, field, code, message, '
            "created_at) SELECT ?, ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
            "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), ?",
            [integration, run_id, *columns, utc_now()],
        )
    return len(issues)


def replace_issues(con, integration: str, stage: str, run_id: str, issues: Iterable[ImportIssue],
                   records: set[str] | None = None) -> int:
    """Replace one stage's import errors for an integration (only those about ``records``, with
    an incremental stage: ``issues`` are then the new ones about them)."""
    if records is None:
        con.execute(f'DELETE FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ?', [integration, stage])
    else:
        id_table(con, "_issue_records", records)
        con.execute(f'DELETE FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ? '
                    "AND record IN (SELECT id FROM _issue_records)", [integration, stage])
        issues = [i for i in issues if i.record in records]
    return _insert_issues(con, integration, run_id, issues)


def replace_value_issues(con, integration: str, stage: str, run_id: str, issues: Iterable[ImportIssue],
                         assessed: dict[str, set[str] | None] | None) -> int:
    """Replace a raw stage's import errors about values (see transform.values): all of them with
    ``assessed`` None (a full read), otherwise only those about the records and fields a delta
    round carried (record -> fields, None: every field of the record). A delta item is a patch:
    an error about a field the round did not carry stays until that field comes again, fixed or not."""
    if assessed is None:
        return replace_issues(con, integration, stage, run_id, issues)
    whole = sorted(r for r, fields in assessed.items() if fields is None)
    pairs = sorted((r, f) for r, fields in assessed.items() if fields is not None for f in fields)
    con.execute("CREATE OR REPLACE TEMP TABLE _assessed AS SELECT unnest(?::VARCHAR[]) AS record, "
                "unnest(?::VARCHAR[]) AS field", [[p[0] for p in pairs], [p[1] for p in pairs]])
    id_table(con, "_assessed_whole", whole)
    con.execute(f'DELETE FROM "{s.IMPORT_ERRORS}" e WHERE integration = ? AND stage = ? '
                "AND (record IN (SELECT id FROM _assessed_whole) OR EXISTS (SELECT 1 FROM _assessed a "
                "WHERE a.record = e.record AND a.field = e.field))", [integration, stage])
    return _insert_issues(con, integration, run_id, issues)


def stage_issues(con, integration: str, stage: str, codes: Iterable[str]) -> list[ImportIssue]:
    """The import errors a stage holds now with one of ``codes``, in record order."""
    rows = con.execute(f'SELECT stage, record, field, code, message FROM "{s.IMPORT_ERRORS}" '
                       "WHERE integration = ? AND stage = ? AND code IN (SELECT unnest(?::VARCHAR[])) "
                       "ORDER BY record, field", [integration, stage, list(codes)]).fetchall()
    return [ImportIssue(*row) for row in rows]
