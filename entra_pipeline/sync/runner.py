"""How every stage runs: compute, gate on the blocking checks, then write its rows and its
sync_run_stages row in one transaction, so a failed or blocked stage leaves its tables exactly as
they were. And the three ways a stage does not commit: ``StageBlocked``, ``ReadFailed``,
``StageFailed``."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator

import duckdb

from entra_pipeline.config import Integration
from entra_pipeline.errors import PipelineError
from entra_pipeline.process import peak_rss_mb
from entra_pipeline.sync import names
from entra_pipeline.sync.checks import CheckOutcome, failed_blocking
from entra_pipeline.sync.outcome import Column, StageOutcome
from entra_pipeline.warehouse import change_log, connection, run_log, summaries, table_rows


class StageFailed(PipelineError):
    """The stage wrote nothing; the message is one line naming the integration."""


class ReadFailed(StageFailed):
    """Reading the source failed; ``transient``: a later attempt may succeed."""


class StageBlocked(StageFailed):
    """A blocking check failed: nothing was written. ``checks`` are all of the stage's outcomes,
    reported although the stage did not commit."""

    def __init__(self, integration: Integration, checks: list[CheckOutcome]) -> None:
        reasons = "; ".join(r.description or r.check_name for r in failed_blocking(checks))
        super().__init__(f"integration {integration.key!r}: {reasons}; nothing was written")
        self.checks = checks


@contextmanager
def memory_failures(run: "StageRun") -> Iterator[None]:
    """A stage that DuckDB's memory_limit stopped fails with one line saying which setting to
    raise (its transaction rolled back: nothing was written)."""
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        reason = str(exc).strip().splitlines()[0]
        raise StageFailed(f"integration {run.key!r}: {run.stage} needed more memory than DuckDB may use ({reason}); "
                          f"raise the warehouse resource's memory_limit or {connection.MEMORY_LIMIT_ENV}; "
                          "nothing was written") from None


def _ignore(message: str) -> None:
    pass


@dataclass
class StageRun:
    """One execution of one stage for one integration: what it needs from around it (a warehouse
    connection, where progress goes) and its timing."""

    integration: Integration
    run_id: str
    stage: str  # names.*
    warehouse: Callable[[], AbstractContextManager]  # opens a DuckDB connection, closes it after
    info: Callable[[str], None] = _ignore  # progress ("users: 40,000 of 100,000 (40%)")
    warn: Callable[[str], None] = _ignore  # something an operator should notice; the stage goes on
    execution_id: str | None = None  # the Dagster run executing it (None: none), for read_ahead
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    _table: tuple[str, int, list[Column]] | None = None

    @property
    def key(self) -> str:
        return self.integration.key

    def record(self, con, **values) -> None:
        """This stage's sync_run_stages row, inside the stage's write transaction."""
        run_log.record_stage(con, self.key, self.run_id, self.stage, self.started_at, **values)

    def describe(self, con) -> None:
        """Note the stage's table as the write left it (inside the transaction): the integration's
        rows and the table's columns."""
        table = names.TABLES[self.stage]
        columns = [Column(name, kind) for name, kind in summaries.table_columns(con, table)]
        self._table = (table, table_rows.count_rows(con, table, self.key), columns)

    def block(self, checks: list[CheckOutcome]) -> None:
        """Raise StageBlocked when a blocking check failed."""
        if failed_blocking(checks):
            raise StageBlocked(self.integration, checks)

    def done(self, checks: list[CheckOutcome], metadata: dict) -> StageOutcome:
        metadata["seconds"] = round(time.monotonic() - self.started, 3)
        # The process's peak so far: steps run one after another, so a rise shows which step needs it.
        metadata["process_peak_rss_mb"] = peak_rss_mb()
        table, rows, columns = self._table or (None, None, [])
        return StageOutcome(metadata, checks, table, rows, columns)


@dataclass
class Prepared:
    """A stage's result before it is written: its checks, what its write does (returning the
    materialization's metadata), and the numbers for sync_run_stages (added/updated/removed)."""

    checks: list[CheckOutcome]
    write: Callable[..., dict]
    stage_values: Callable[[], dict] = dict


def run_stage(run: StageRun, compute: Callable[..., Prepared], *args) -> StageOutcome:
    """Compute a stage and, if no blocking check fails, write it with its sync_run_stages row, all
    in one transaction: the write is based on exactly the rows the computation read."""
    with run.warehouse() as con, connection.transaction(con):
        prepared = compute(con, run.integration, run.run_id, *args)
        run.block(prepared.checks)
        write_started = time.monotonic()
        metadata = prepared.write(con)
        run.record(con, **prepared.stage_values())
        run.describe(con)
        metadata["write_seconds"] = round(time.monotonic() - write_started, 3)
    return run.done(prepared.checks, metadata)


def checked_write(run: StageRun, checks: list[CheckOutcome], write: Callable[[], dict]) -> StageOutcome:
    """Write only if no blocking check failed (``write`` opens its own transaction)."""
    run.block(checks)
    write_started = time.monotonic()
    metadata = write()
    metadata["write_seconds"] = round(time.monotonic() - write_started, 3)
    return run.done(checks, metadata)


def require_fields(con, integration: Integration, stage: str, needed: set[str],
                   asset: str | None = None) -> set[str]:
    """The fields ``stage``'s rows carry; StageFailed if the configuration needs others (the
    mapping or exclusions changed since that stage last ran)."""
    asset = asset or stage
    available = change_log.fields_read(con, integration.key, stage)
    if available is None:
        raise StageFailed(f"integration {integration.key!r}: {asset} has no rows yet; materialize {asset} first")
    missing = sorted(needed - available)
    if missing:
        contact = stage == names.MAPPED_CONTACT_FIELDS
        raise StageFailed(
            f"integration {integration.key!r}: the mapping and exclusions use "
            f"{'contact fields' if contact else 'directory fields'} that the last {asset} did not "
            f"{'fill' if contact else 'read'} ({', '.join(missing)}); materialize "
            f"{'raw_graph_users and ' if stage == names.MAPPED_CONTACTS else ''}{asset} again")
    return available
