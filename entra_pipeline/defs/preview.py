"""The preview asset: sync_preview, what a sync would change, without changing it."""

import dagster as dg

from entra_pipeline.defs.resources import WAREHOUSE_POOL, IntegrationsResource, WarehouseResource
from entra_pipeline.defs.stage import execute, stage_run
from entra_pipeline.sync import names, sync_preview

PREVIEW_GROUP = "entra_preview"


def build_assets(partitions: dg.PartitionsDefinition, raw: list[dg.AssetDep]) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name=names.SYNC_PREVIEW, partitions_def=partitions, group_name=PREVIEW_GROUP, pool=WAREHOUSE_POOL,
        kinds={"duckdb"}, deps=raw,
        description="Preview (dry run) of a sync from the raw tables as they are: which contacts would join, "
                    "change (which fields) or leave, who would be excluded or no longer excluded, which lists "
                    "and list memberships would come or go, who would join, change or leave the merged directory "
                    "(all_contacts, with each field's old and new value and source), and which blocking check "
                    "would stop the sync. "
                    "Computed inside a transaction that is rolled back, so the contact and list tables stay "
                    "byte-identical; the report replaces this integration's rows of sync_preview.",
    )
    def sync_preview_asset(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                           warehouse: WarehouseResource):
        configured = integrations.load()
        run = stage_run(context, integrations.get(context.partition_key, loaded=configured), warehouse)
        yield from execute(run, lambda: sync_preview.materialize(run, configured.directory, configured.merged_keys))

    return [sync_preview_asset]
