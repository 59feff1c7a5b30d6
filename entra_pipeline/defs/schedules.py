"""One schedule per integration, from its cron; the same job runs by hand from the UI. And the
sensor that frees the warehouse pool of runs whose process died."""

from __future__ import annotations


import dagster as dg

from entra_pipeline.config import Integration, IntegrationsFile
from entra_pipeline.defs.resources import WAREHOUSE_POOL
from entra_pipeline.pool import reclaim_dead_runs

RECLAIM_SENSOR = "warehouse_pool_reclaim"


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


def build_schedules(integrations: IntegrationsFile, job: "dg.UnresolvedAssetJobDefinition") -> list[dg.ScheduleDefinition]:
    return [_schedule(integration, job) for integration in integrations.integrations]


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
