"""Running a sync stage from an asset: run config -> options, the stage's outcome -> a
MaterializeResult with its check results, its domain errors -> dg.Failure."""

from __future__ import annotations

from typing import Callable, Iterator

import dagster as dg

from entra_pipeline.config import Integration, RunSettings
from entra_pipeline.defs.checks import check_result, metadata_value
from entra_pipeline.defs.jobs import SYNC_RUN_TAG
from entra_pipeline.defs.resources import WarehouseResource
from entra_pipeline.sync.options import RawReadOptions, SyncOptions
from entra_pipeline.sync.outcome import StageOutcome
from entra_pipeline.sync.runner import StageBlocked, StageFailed, StageRun, memory_failures


class SyncRunConfig(dg.Config):
    """Run config of the contact and list writers. ``allow_removals`` approves, for this run only,
    removing more contacts or list memberships than the integration's deletion guard allows."""

    allow_removals: bool = False

    def options(self) -> SyncOptions:
        return SyncOptions(allow_removals=self.allow_removals)


class RawReadConfig(dg.Config):
    """Run config of the source readers. ``full_resync`` reads everything this run (a full delta
    round) instead of the changes since the last sync, and reports what the full read corrected;
    a Workday report is always read whole, and with it every later stage recomputes everything
    (as after a full delta round: hand edits in the warehouse are undone)."""

    full_resync: bool = False

    def options(self) -> RawReadOptions:
        return RawReadOptions(full_resync=self.full_resync)


def source_retry(runs: RunSettings) -> dg.RetryPolicy | None:
    """On the source readers only: the client has retried each request already; this retries the
    whole read later, when a throttled or unavailable tenant may have recovered."""
    if not runs.step_retries:
        return None
    return dg.RetryPolicy(max_retries=runs.step_retries, delay=runs.step_retry_delay_seconds,
                          backoff=dg.Backoff.EXPONENTIAL)


def stage_run(context: dg.AssetExecutionContext, integration: Integration, warehouse: WarehouseResource) -> StageRun:
    """The stage of this asset, for the run's integration; progress goes to the run's log."""
    # A contacts run that follows a source run records its stages under that run's id: one sync. A
    # re-execution copies the tag, but it is a sync of its own.
    tags = context.run.tags
    run_id = context.run.run_id if "dagster/parent_run_id" in tags else tags.get(SYNC_RUN_TAG, context.run.run_id)
    return StageRun(integration, run_id, context.assets_def.key.path[-1], warehouse.get_connection,
                    info=context.log.info, warn=context.log.warning, execution_id=context.run.run_id)


def execute(stage: StageRun, run: Callable[[], StageOutcome]) -> Iterator:
    """Run a stage: its materialization and check results, or its check results and a Failure."""
    try:
        with memory_failures(stage):
            outcome = run()
    except StageBlocked as exc:
        yield from (check_result(r) for r in exc.checks)
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except StageFailed as exc:
        raise dg.Failure(description=str(exc), allow_retries=exc.transient) from None
    yield materialize_result(outcome)


def materialize_result(outcome: StageOutcome) -> dg.MaterializeResult:
    """The stage's metadata, and Dagster's standard table metadata: the integration's rows in the
    stage's table, the table's name and its columns."""
    metadata = {name: metadata_value(value) for name, value in outcome.metadata.items()}
    if outcome.table is not None:
        metadata.update({
            "dagster/row_count": outcome.rows, "dagster/table_name": outcome.table,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(column.name, column.type) for column in outcome.columns])})
    return dg.MaterializeResult(metadata=metadata, check_results=[check_result(r) for r in outcome.checks])

