"""The Entra ID source assets: raw_graph_users and raw_graph_groups."""

import dagster as dg

from entra_pipeline.defs import checks
from entra_pipeline.defs.resources import WAREHOUSE_POOL, GraphResource, IntegrationsResource, WarehouseResource
from entra_pipeline.defs.stage import RawReadConfig, execute, stage_run
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names, raw_graph_groups, raw_graph_users
from entra_pipeline.sync.options import RawReadOptions
from entra_pipeline.sync.read_ahead import STAGE_OF
from entra_pipeline.transform.fields import ENTRA

GROUP_NAME = "entra_sync"

USERS_CHECKS = (c.RAW_USERS_COMPLETE, c.DIRECTORY_NOT_EMPTY, c.CERTIFICATE_NOT_EXPIRING, c.DIRECTORY_VALUES_FIT,
                c.EXTENSION_ATTRIBUTES_DECIDED)


def read_options(context: dg.AssetExecutionContext, config: RawReadConfig) -> dict[str, RawReadOptions]:
    """The read options of users and groups in this run: this step's config, and the other Graph
    step's from the run config (its read may start ahead, in this step)."""
    own = context.assets_def.key.path[-1]
    ops = context.run.run_config.get("ops") or {}
    return {resource: (config if stage == own else RawReadConfig(**((ops.get(stage) or {}).get("config") or {})))
            .options() for resource, stage in STAGE_OF.items()}


def build_assets(partitions: dg.PartitionsDefinition, retry: dg.RetryPolicy | None) -> list[dg.AssetsDefinition]:
    common = dict(partitions_def=partitions, group_name=GROUP_NAME, pool=WAREHOUSE_POOL, kinds={"azure", "duckdb"},
                  retry_policy=retry)

    @dg.asset(
        name=names.RAW_GRAPH_USERS, **common, check_specs=checks.specs(*USERS_CHECKS, partitions_def=partitions),
        description="Directory users read from Microsoft Graph, only the properties the mapping and exclusions "
                    "need. With read: delta (the default) the first sync is a full /users/delta round and later "
                    "syncs apply only the changes since the stored deltaLink (a full round again on "
                    "full_resync, every full_sync_every_days, or when Graph expires the token); with read: list "
                    "every sync reads /users whole. Rows, deltaLink and history change in one transaction.",
    )
    def raw_graph_users_asset(context: dg.AssetExecutionContext, config: RawReadConfig,
                              integrations: IntegrationsResource, graph: GraphResource, warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key, ENTRA)
        run = stage_run(context, integration, warehouse)
        yield from execute(run, lambda: raw_graph_users.materialize(run, graph.client, read_options(context, config)))

    @dg.asset(
        name=names.RAW_GRAPH_GROUPS, **common,
        check_specs=checks.specs(c.RAW_GROUPS_COMPLETE, partitions_def=partitions),
        description="Directory groups and each group's direct members. With read: delta a full /groups/delta "
                    "round (members selected: members@delta) the first time, then only changed groups and "
                    "membership additions and removals; with read: list /groups plus every group's "
                    "/members read 20 pages at a time through JSON $batch. Groups, memberships and deltaLink "
                    "change in one transaction.",
    )
    def raw_graph_groups_asset(context: dg.AssetExecutionContext, config: RawReadConfig,
                               integrations: IntegrationsResource, graph: GraphResource, warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key, ENTRA)
        run = stage_run(context, integration, warehouse)
        yield from execute(run, lambda: raw_graph_groups.materialize(run, graph.client, read_options(context, config)))

    return [raw_graph_users_asset, raw_graph_groups_asset]
