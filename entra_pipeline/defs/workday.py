"""The Workday source asset: raw_workday_workers."""

import dagster as dg

from entra_pipeline.defs import checks
from entra_pipeline.defs.entra import GROUP_NAME
from entra_pipeline.defs.resources import WAREHOUSE_POOL, IntegrationsResource, WarehouseResource, WorkdayResource
from entra_pipeline.defs.stage import RawReadConfig, execute, stage_run
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names, raw_workday_workers
from entra_pipeline.transform.fields import WORKDAY

WORKERS_CHECKS = (c.WORKERS_NOT_EMPTIED, c.WORKERS_IDENTIFIED, c.REPORT_COLUMNS_DECIDED, c.RULE_COLUMNS_IN_REPORT)


def build_assets(partitions: dg.PartitionsDefinition, retry: dg.RetryPolicy | None) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name=names.RAW_WORKDAY_WORKERS, partitions_def=partitions, group_name=GROUP_NAME, pool=WAREHOUSE_POOL,
        kinds={"workday", "duckdb"}, retry_policy=retry,
        check_specs=checks.specs(*WORKERS_CHECKS, partitions_def=partitions),
        description="Workday workers from the integration's custom report (Report-as-a-Service), one row per "
                    "worker keyed by id_field. RaaS has no change tracking, so every sync reads the whole report: "
                    "it is parsed while it streams into a staging file (the warehouse stays unlocked during the "
                    "download), then compared with the stored workers and replaced, with the change log and the "
                    "run log, in one transaction.",
    )
    def raw_workday_workers_asset(context: dg.AssetExecutionContext, config: RawReadConfig,
                                  integrations: IntegrationsResource, workday: WorkdayResource,
                                  warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key, WORKDAY)
        run = stage_run(context, integration, warehouse)
        yield from execute(run, lambda: raw_workday_workers.materialize(run, workday.client, config.full_resync))

    return [raw_workday_workers_asset]
