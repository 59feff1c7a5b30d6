"""The raw Workday table: a report's workers, staged into a scratch DuckDB file while the report
streams (the warehouse stays closed meanwhile), then applied to the warehouse in one step.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Iterable

import pandas as pd

from entra_pipeline.transform import values
from entra_pipeline.transform.errors import DUPLICATE_WORKER_ID, MISSING_WORKER_ID, ImportIssue
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.connection import attached, connect
from entra_pipeline.warehouse.raw_tables import RawChange, replace_compared
from entra_pipeline.warehouse.table_rows import insert_rows

WORKER_BATCH = 5000  # report entries per insert: memory holds a batch, not the report
STAGED = "staged_workday"  # the schema name the staged report is attached under (see ``staged``)


def stage_workers(path: str, entries: Iterable[dict], id_field: str, keep: set[str]) -> int:
    """Write a report's entries, as they stream, into table ``workers`` of a new DuckDB file at
    ``path``: the warehouse is not opened (and not locked) while a large report downloads. Only
    the columns in ``keep`` are kept, within the limits of transform.values: a value beyond them
    is left out and an import error about it goes to table ``issues`` (an entry whose id is
    unusable is left out whole). Raises whatever ``entries`` raises; the file is then simply
    thrown away."""
    # The same memory bound as the warehouse (see connection.connect): the scratch file spills to
    # its own temp directory next to it.
    con = connect(path, wait_seconds=0)
    try:
        con.execute("CREATE TABLE workers (pos BIGINT, id VARCHAR, data VARCHAR)")
        con.execute("CREATE TABLE issues (pos BIGINT, record VARCHAR, field VARCHAR, code VARCHAR, "
                    "message VARCHAR)")
        batch: list[tuple] = []
        problems: list[tuple] = []
        count = 0
        for count, entry in enumerate(entries, start=1):
            wid, kept, issues, usable = values.check_entry(entry, keep, id_field, count, s.RAW_WORKDAY_WORKERS)
            problems += [(count, i.record, i.field, i.code, i.message) for i in issues]
            if usable:
                # Sorted keys: a worker whose entry did not change compares equal as text.
                batch.append((count, wid,
                              json.dumps(kept, ensure_ascii=False, sort_keys=True, separators=(",", ":"))))
            if len(batch) >= WORKER_BATCH:
                insert_rows(con, "workers", pd.DataFrame(batch, columns=["pos", "id", "data"], dtype=object))
                batch.clear()
        insert_rows(con, "workers", pd.DataFrame(batch, columns=["pos", "id", "data"], dtype=object))
        if problems:
            con.executemany("INSERT INTO issues VALUES (?, ?, ?, ?, ?)", problems)
        return count
    finally:
        con.close()


def staged(con, path: str) -> AbstractContextManager:
    """The staged report attached read-only to the warehouse connection as ``staged_workday``."""
    return attached(con, path, STAGED)


def apply_raw_workers(con, integration: str, run_id: str, id_field: str) -> tuple[RawChange, list[ImportIssue]]:
    """Replace an integration's Workday workers with the staged report (see ``staged``), compared
    with the stored rows for the change counts and the change log. An entry without ``id_field``,
    or repeating another's, is kept out and reported (the first of a repeated id stays)."""
    stage = table = s.RAW_WORKDAY_WORKERS
    source = f"{STAGED}.workers"
    issues = [ImportIssue(stage, record, field_, code, message) for record, field_, code, message in con.execute(
        f"SELECT record, field, code, message FROM {STAGED}.issues ORDER BY pos, field").fetchall()]
    issues += [ImportIssue(stage, f"entry {pos}", id_field, MISSING_WORKER_ID,
                           f"report entry {pos} has no {id_field}; not imported")
               for (pos,) in con.execute(f"SELECT pos FROM {source} WHERE id IS NULL ORDER BY pos").fetchall()]
    for wid, positions in con.execute(f"SELECT id, list(pos ORDER BY pos) FROM {source} WHERE id IS NOT NULL "
                                      "GROUP BY id HAVING count(*) > 1 ORDER BY id").fetchall():
        issues += [ImportIssue(stage, wid, id_field, DUPLICATE_WORKER_ID,
                               f"report entry {pos} repeats {id_field} {wid!r} of entry {positions[0]}; not imported")
                   for pos in positions[1:]]
    con.execute("CREATE OR REPLACE TEMP TABLE _workers_new AS SELECT id, data FROM ("
                f"SELECT id, data, row_number() OVER (PARTITION BY id ORDER BY pos) AS n FROM {source} "
                "WHERE id IS NOT NULL) WHERE n = 1")
    change = replace_compared(con, table, integration, run_id, "_workers_new", ["id", "data"])
    return change, issues
