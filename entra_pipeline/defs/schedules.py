"""One schedule per integration, from its cron; the same job runs by hand from the UI."""

from __future__ import annotations


import dagster as dg

from entra_pipeline.config import Integration, IntegrationsFile


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
