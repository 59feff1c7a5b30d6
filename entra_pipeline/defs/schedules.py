"""One schedule per integration, from its cron, launching its source job; the sensors that run the
contacts job after each source run; and the sensor that frees the warehouse pool of runs whose
process died."""

from __future__ import annotations

import dagster as dg

from entra_pipeline.config import Integration
from entra_pipeline.defs.jobs import FOLLOW_TAG, SYNC_RUN_TAG, contacts_run_config, runnable
from entra_pipeline.defs.resources import WAREHOUSE_POOL
from entra_pipeline.pool import reclaim_dead_runs

RECLAIM_SENSOR = "warehouse_pool_reclaim"
FOLLOW_SENSOR = "follow_source_runs"
FOLLOW_FAILED_SENSOR = "follow_failed_source_runs"
# Runs of a backfill: the backfill runs the assets it was asked for, the contacts too when selected.
BACKFILL_TAG = "dagster/backfill"


def schedule_name(integration: Integration) -> str:
    return f"sync_{integration.key}"


def _schedule(integration: Integration, job: "dg.UnresolvedAssetJobDefinition") -> dg.ScheduleDefinition:
    @dg.schedule(
        name=schedule_name(integration),
        job=job,
        cron_schedule=integration.schedule.cron,
        execution_timezone=integration.schedule.timezone,
        default_status=(dg.DefaultScheduleStatus.RUNNING if integration.schedule.enabled
                        else dg.DefaultScheduleStatus.STOPPED),
        description=f"Syncs {integration.title!r} ({integration.key}) on {integration.schedule.cron!r} "
                    f"({integration.schedule.timezone}).",
    )
    def _sync(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(partition_key=integration.key, tags={"integration": integration.key})

    return _sync


def build_schedules(integrations: list[Integration],
                    source_jobs: dict[str, "dg.UnresolvedAssetJobDefinition"]) -> list[dg.ScheduleDefinition]:
    """A schedule per integration, launching the source job of its source type (``source_jobs``: by kind)."""
    return [_schedule(integration, source_jobs[integration.kind]) for integration in integrations]


def follow_request(run: dg.DagsterRun, done: set[dg.AssetKey], source_assets: dict[str, frozenset[dg.AssetKey]],
                   parents: dict[dg.AssetKey, frozenset[dg.AssetKey]]) -> dg.RunRequest | dg.SkipReason:
    """The contacts run that follows the finished source run ``run`` (``done``: the assets it
    wrote), for the stages whose inputs it wrote; a SkipReason when none or not a source run."""
    key = run.tags.get("dagster/partition")
    expected = source_assets.get(run.job_name)
    if expected is None and run.asset_selection and not run.tags.get(BACKFILL_TAG):
        # Materialize of source assets from the asset graph (Dagster's implicit asset job).
        every_source = frozenset().union(*source_assets.values())
        expected = run.asset_selection if run.asset_selection <= every_source else None
    if expected is None or not key:
        return dg.SkipReason(f"run {run.run_id} is not a source run of one integration")
    if run.tags.get(FOLLOW_TAG):
        return dg.SkipReason(f"run {run.run_id} is not followed: tag {FOLLOW_TAG}={run.tags[FOLLOW_TAG]}")
    selection = runnable(parents, set(run.asset_selection or expected) - done)
    if not selection:
        return dg.SkipReason(f"run {run.run_id} wrote nothing the contacts of {key!r} could be made from")
    approved = run.tags.get("allow_removals") == "true"
    tags = {SYNC_RUN_TAG: run.run_id, "integration": key, **({"allow_removals": "true"} if approved else {})}
    return dg.RunRequest(run_key=run.run_id, partition_key=key, tags=tags, asset_selection=selection,
                         run_config=contacts_run_config(approved, selection))


def build_follow_sensors(source_assets: dict[str, frozenset[dg.AssetKey]], contacts_job,
                         parents: dict[dg.AssetKey, frozenset[dg.AssetKey]]) -> list[dg.SensorDefinition]:
    """After each source run (a source job, scheduled or launched from the UI, or a Materialize of
    source assets), the contacts job for the same integration, once per source run, for the stages
    whose inputs it wrote: a failed groups read still updates the contacts, and the lists wait. An
    approval of removals (tag allow_removals) goes with it. Runs whose launcher runs the contacts
    job itself (the CLI) or that a preview follows are left alone. ``source_assets``: each source
    job's assets; ``parents``: each contact stage's inputs, in flow order."""
    if not source_assets:
        return []  # no sensor watching every job of the location for nothing

    def sensor(name: str, status: dg.DagsterRunStatus, what: str) -> dg.SensorDefinition:
        # No monitored_jobs: every job of this code location, so Materialize runs are seen too.
        @dg.run_status_sensor(name=name, run_status=status, request_job=contacts_job,
                              default_status=dg.DefaultSensorStatus.RUNNING,
                              description=f"Runs the contacts job of an integration after its source run {what}.")
        def _sensor(context: dg.RunStatusSensorContext):
            run = context.dagster_run
            steps = context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            return follow_request(run, {dg.AssetKey(event.step_key) for event in steps}, source_assets, parents)

        return _sensor

    return [sensor(FOLLOW_SENSOR, dg.DagsterRunStatus.SUCCESS, "succeeded"),
            sensor(FOLLOW_FAILED_SENSOR, dg.DagsterRunStatus.FAILURE,
                   "failed in part (the stages whose inputs were written)")]


def build_reclaim_sensor() -> dg.SensorDefinition:
    """Every 30 s in the daemon (make ui): runs whose process is gone (their run lock no longer held)
    are marked failed and their warehouse pool slots freed, as each CLI sync does before it starts.
    Dagster's run monitoring cannot tell that a worker of the default run launcher died, so without
    this a killed run would hold the pool and every scheduled sync would wait behind it."""

    @dg.sensor(name=RECLAIM_SENSOR, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Frees the warehouse pool of runs whose process died (killed, out of memory, reboot).")
    def _reclaim(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        lines = [recovered.line() for recovered in reclaim_dead_runs(context.instance, WAREHOUSE_POOL)]
        for line in lines:
            context.log.info(line)
        return dg.SkipReason("; ".join(lines) or "no run whose process died holds the warehouse pool")

    return _reclaim
