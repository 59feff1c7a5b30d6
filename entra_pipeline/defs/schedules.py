"""One schedule per integration, from its cron, launching its source job; the sensor that runs the
contacts job after each successful source run; and the sensor that frees the warehouse pool of
runs whose process died."""

from __future__ import annotations


import dagster as dg

from entra_pipeline.config import Integration
from entra_pipeline.defs.jobs import FOLLOW_TAG, SYNC_RUN_TAG, contacts_run_config
from entra_pipeline.defs.resources import WAREHOUSE_POOL
from entra_pipeline.pool import reclaim_dead_runs

RECLAIM_SENSOR = "warehouse_pool_reclaim"
FOLLOW_SENSOR = "follow_source_runs"


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


def build_follow_sensor(source_jobs: list, contacts_job: "dg.UnresolvedAssetJobDefinition") -> dg.SensorDefinition:
    """After each successful source run (scheduled, or launched from the UI), the contacts job for
    the same integration, once per source run; an approval of removals (tag allow_removals) goes
    with it. Runs whose launcher runs the contacts job itself (the CLI) are left alone."""

    @dg.run_status_sensor(name=FOLLOW_SENSOR, run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=source_jobs,
                          request_job=contacts_job, default_status=dg.DefaultSensorStatus.RUNNING,
                          description="Runs the contacts job of an integration after its source job succeeded.")
    def _follow(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        key = run.tags.get("dagster/partition")
        if run.tags.get(FOLLOW_TAG) or not key:
            return dg.SkipReason(f"run {run.run_id} is followed by its launcher")
        tags = {SYNC_RUN_TAG: run.run_id, "integration": key}
        tags.update({name: "true" for name in ("allow_removals",) if run.tags.get(name) == "true"})
        return dg.RunRequest(run_key=run.run_id, partition_key=key, tags=tags,
                             run_config=contacts_run_config(run.tags.get("allow_removals") == "true"))

    return _follow


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
