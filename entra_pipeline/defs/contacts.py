"""The contact assets every integration has: mapped_contacts and filtered_contacts."""

import dagster as dg

from entra_pipeline.defs import checks
from entra_pipeline.defs.entra import GROUP_NAME
from entra_pipeline.defs.resources import WAREHOUSE_POOL, IntegrationsResource, WarehouseResource
from entra_pipeline.defs.stage import SyncRunConfig, execute, stage_run
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import filtered_contacts, mapped_contacts, names
from entra_pipeline.sync.options import SyncOptions
from entra_pipeline.sync.runner import run_stage


def build_assets(partitions: dg.PartitionsDefinition, raw: list[dg.AssetDep]) -> list[dg.AssetsDefinition]:
    """``raw``: the source assets the mapping reads (those of the configured source types)."""
    common = dict(partitions_def=partitions, group_name=GROUP_NAME, pool=WAREHOUSE_POOL, kinds={"duckdb"})

    @dg.asset(
        name=names.MAPPED_CONTACTS, **common, deps=raw,
        check_specs=checks.specs(c.DIRECTORY_USERS_MAPPED, c.CONTACTS_HAVE_UNIQUE_ID, c.UNIQUE_CONTACT_IDS_DISTINCT,
                                 c.CONTACT_VALUES_VALID, c.NO_ORPHANED_DATA,
                                 partitions_def=partitions),
        description="Every directory user with a usable Unique Contact ID, mapped to contact fields (emails "
                    "lower-cased). Users without one, and duplicates, become import errors. Maps the users "
                    "changed since it last ran (and everyone sharing a Unique Contact ID with them), or all "
                    "of them after a full read or a mapping change; rows and mapping errors change in one "
                    "transaction.",
    )
    def mapped_contacts_asset(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                              warehouse: WarehouseResource):
        configured = integrations.load()
        run = stage_run(context, integrations.get(context.partition_key, loaded=configured), warehouse)
        yield from execute(run, lambda: run_stage(run, mapped_contacts.compute, SyncOptions(),
                                             configured.named_keys, configured.unreadable))

    @dg.asset(
        name=names.FILTERED_CONTACTS, **common, deps=[dg.AssetDep(mapped_contacts_asset)],
        check_specs=checks.specs(c.EXCLUSIONS_KEEP_CONTACTS, c.CONTACT_REMOVALS_WITHIN_LIMIT,
                                 c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT, partitions_def=partitions),
        description="The synced contacts: mapped contacts that no exclusion rule removed (table contacts), and "
                    "who was excluded by which rule (table excluded_contacts). Applies the exclusions to the "
                    "contacts that changed (all of them after a rule change) and updates both tables in one "
                    "transaction, appends who joined, changed or left to contact_changes, and in the same "
                    "transaction takes people who are no longer contacts off every list.",
    )
    def filtered_contacts_asset(context: dg.AssetExecutionContext, config: SyncRunConfig,
                                integrations: IntegrationsResource, warehouse: WarehouseResource):
        run = stage_run(context, integrations.get(context.partition_key), warehouse)
        yield from execute(run, lambda: run_stage(run, filtered_contacts.compute, config.options()))

    return [mapped_contacts_asset, filtered_contacts_asset]
