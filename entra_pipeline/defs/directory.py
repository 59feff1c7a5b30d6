"""The merged contact directory's asset: all_contacts, merged again at the end of every
integration's sync (its partition: the integration whose changes the merge took in)."""

import dagster as dg

from entra_pipeline.defs import checks
from entra_pipeline.defs.entra import GROUP_NAME
from entra_pipeline.defs.resources import WAREHOUSE_POOL, IntegrationsResource, WarehouseResource
from entra_pipeline.defs.stage import SyncRunConfig, execute, stage_run
from entra_pipeline.sync import all_contacts, names
from entra_pipeline.sync import checks as c
from entra_pipeline.sync.runner import run_stage


def build_assets(partitions: dg.PartitionsDefinition, deps: list[dg.AssetDep]) -> list[dg.AssetsDefinition]:
    """``deps``: filtered_contacts."""

    @dg.asset(
        name=names.ALL_CONTACTS, partitions_def=partitions, group_name=GROUP_NAME, pool=WAREHOUSE_POOL,
        kinds={"duckdb"}, deps=deps,
        check_specs=checks.specs(c.DIRECTORY_REMOVALS_WITHIN_LIMIT, c.DIRECTORY_MEMBERSHIPS_WITHIN_LIMIT,
                                 partitions_def=partitions),
        description="The merged contact directory: one row per person (Unique Contact ID) across every "
                    "integration, each field from the first integration of its precedence "
                    "(contacts_directory.precedence) that has a value, with the integration it came from. A "
                    "person any integration excludes is left out unless contacts_directory.excluded_anywhere "
                    "is false. Merged again at the end of each integration's sync, for the people that sync "
                    "changed (everyone after a full round or a new configuration), in DuckDB; only the people "
                    "who joined, changed or left are written and appended to all_contact_changes, in one "
                    "transaction.",
    )
    def all_contacts_asset(context: dg.AssetExecutionContext, config: SyncRunConfig,
                           integrations: IntegrationsResource, warehouse: WarehouseResource):
        configured = integrations.load()
        run = stage_run(context, integrations.get(context.partition_key, loaded=configured), warehouse)
        yield from execute(run, lambda: run_stage(run, all_contacts.compute, config.options(), configured.directory,
                                                  configured.merged_keys))

    return [all_contacts_asset]

