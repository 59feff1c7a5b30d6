"""The list asset every integration has: distribution_lists."""

import dagster as dg

from entra_pipeline.defs import checks
from entra_pipeline.defs.entra import GROUP_NAME
from entra_pipeline.defs.resources import WAREHOUSE_POOL, IntegrationsResource, WarehouseResource
from entra_pipeline.defs.stage import SyncRunConfig, execute, stage_run
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import distribution_lists, names
from entra_pipeline.sync.runner import run_stage


def build_assets(partitions: dg.PartitionsDefinition, deps: list[dg.AssetDep]) -> list[dg.AssetsDefinition]:
    """``deps``: filtered_contacts, and raw_graph_groups when Entra ID integrations are configured."""

    @dg.asset(
        name=names.DISTRIBUTION_LISTS, partitions_def=partitions, group_name=GROUP_NAME, pool=WAREHOUSE_POOL,
        kinds={"duckdb"}, deps=deps,
        check_specs=checks.specs(c.SELECTED_LISTS_RESOLVED, c.NO_LIST_REMOVED, c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT,
                                 partitions_def=partitions),
        description="Selected directory groups as distribution lists, resolved to contacts: nested groups "
                    "flattened (cycle-safe), only synced contacts as members. Lists change in Entra ID, not "
                    "here. Rebuilds the lists whose groups changed shape and recomputes the people whose "
                    "memberships or contact status changed (everything after a full read or a selection "
                    "change); lists, members and list errors change in one transaction.",
    )
    def distribution_lists_asset(context: dg.AssetExecutionContext, config: SyncRunConfig,
                                 integrations: IntegrationsResource, warehouse: WarehouseResource):
        run = stage_run(context, integrations.get(context.partition_key), warehouse)
        yield from execute(run, lambda: run_stage(run, distribution_lists.compute, config.options()))

    return [distribution_lists_asset]
