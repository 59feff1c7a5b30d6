"""Stage raw_workday_workers: the integration's Workday report (RaaS has no change tracking, so
always whole), parsed while it streams into a scratch file with the warehouse unlocked, then
compared with the stored workers and applied, with the change log and the run log, in one
transaction."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterator

from entra_pipeline.config import SKIP, ConfigError, Integration
from entra_pipeline.process import peak_rss_mb
from entra_pipeline.sources.workday.client import WorkdayClient, WorkdayError
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names
from entra_pipeline.sync.outcome import StageOutcome, preview
from entra_pipeline.sync.runner import ReadFailed, StageFailed, StageRun
from entra_pipeline.transform.fields import WORKDAY
from entra_pipeline.warehouse import change_log, connection, import_errors, raw_tables, raw_workers, table_rows

OpenWorkday = Callable[[Integration], WorkdayClient]  # a report client for the integration's tenant


def counted(run: StageRun, items: Iterator, what: str, every: int = 20_000) -> Iterator:
    """Pass ``items`` through, reporting how many so far (a large report takes minutes; no total
    is known before its end)."""
    count = 0
    for count, item in enumerate(items, start=1):
        if count % every == 0:
            run.info(f"{what} {count:,}")
        yield item
    run.info(f"{what} {count:,} (all)")


def materialize(run: StageRun, open_workday: OpenWorkday, full_resync: bool = False) -> StageOutcome:
    """Read the integration's report whole and replace its stored workers; the change log names the
    workers that changed, or everyone with ``full_resync`` (every later stage then recomputes all)."""
    integration, source, key = run.integration, run.integration.source, run.key
    with run.warehouse() as con:
        previous = table_rows.count_rows(con, names.RAW_WORKDAY_WORKERS, key)
    with tempfile.TemporaryDirectory(prefix="workday-") as scratch:
        staged = str(Path(scratch) / "report.duckdb")
        # Only the columns the configuration uses are kept (a report may carry more, even
        # sensitive ones); the others are only counted, for report_columns_decided.
        named = integration.imported_fields()
        try:
            with open_workday(integration) as client:
                raw_workers.stage_workers(staged, counted(run, client.entries(), "workers"), source.id_field, named)
        except ConfigError as exc:
            raise StageFailed(str(exc)) from None
        except WorkdayError as exc:
            raise ReadFailed(f"integration {key!r}: reading the Workday report failed: {exc}",
                             transient=exc.transient) from None
        stats = client.stats
        # The process's peak so far: what reading the report cost, before any of the stages after it.
        metadata = {"workday_requests": stats.requests, "workday_token_requests": stats.token_requests,
                    "workday_bytes": stats.bytes, "workday_seconds": stats.seconds, "report_entries": stats.entries,
                    "peak_rss_mb_after_read": peak_rss_mb()}
        columns = dict(sorted(stats.columns.items()))
        tested = integration.tested_fields()
        # Missing columns are worth a warning when someone named them; a default the report lacks is not.
        explicit = {name for name, target in integration.mapping.fields.items() if target != SKIP} | tested
        checks = [c.report_columns_result(columns, named | set(integration.mapping.fields), explicit),
                  c.rule_columns_result(columns, tested)]
        with run.warehouse() as con, raw_workers.staged(con, staged), connection.transaction(con):
            change, issues = raw_workers.apply_raw_workers(con, key, run.run_id, source.id_field)
            checks = [c.workers_not_emptied_result(change.total, previous),
                      c.issues_result(c.WORKERS_IDENTIFIED, issues), *checks]
            run.block(checks)  # raising inside the transaction rolls it back
            raw_tables.drop_other_source(con, key, WORKDAY)
            import_errors.replace_issues(con, key, names.RAW_WORKDAY_WORKERS, run.run_id, issues)
            change_log.log_changes(con, key, names.RAW_WORKDAY_WORKERS, run.run_id,
                                   None if full_resync else change.changed_ids)
            # Every configured column counts as read: a report without it has it empty for everyone.
            change_log.write_fields_read(con, key, names.RAW_WORKDAY_WORKERS, run.run_id, named)
            run.record(con, read_mode="full", read_reason="a Workday report is read whole" + (
                           "; full resync asked for in the run config (full_resync: true)" if full_resync else ""),
                       changes_read=stats.entries, added=change.added, updated=change.updated,
                       removed=change.removed, graph_requests=stats.requests, graph_bytes=stats.bytes)
            run.describe(con)
            sample = table_rows.sample_rows(con, names.RAW_WORKDAY_WORKERS, key, ["id"])
    return run.done(checks, {"rows": change.total, "workers_added": change.added, "workers_updated": change.updated,
                             "workers_removed": change.removed, "import_errors": len(issues), **metadata,
                             "preview": preview(sample, ["id"])})
