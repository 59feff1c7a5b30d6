"""dg.Definitions for the sync: gathers assets, checks, the job, schedules, the pool sensor and resources.

The integrations file is read when the code location loads: its keys are the partitions and its
crons the schedules. Edit the file, then reload the code location.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from entra_pipeline.config import config_path, load_integrations
from entra_pipeline.defs import contacts, entra, lists, preview, workday
from entra_pipeline.defs.resources import GraphResource, IntegrationsResource, WarehouseResource, WorkdayResource
from entra_pipeline.defs.schedules import build_reclaim_sensor, build_schedules
from entra_pipeline.defs.stage import source_retry
from entra_pipeline.run_locks import run_locked_executor
from entra_pipeline.warehouse import warehouse_path

SYNC_JOB = "entra_sync"
PREVIEW_JOB = "entra_preview"


def build_defs(config_file: str | Path | None = None, warehouse_file: str | Path | None = None,
               demo_dir: str | Path | None = None) -> dg.Definitions:
    config_file = Path(config_file) if config_file else config_path()
    integrations = load_integrations(config_file)
    partitions = dg.StaticPartitionsDefinition(integrations.keys)
    retry = source_retry(integrations.runs)
    users, groups = entra.build_assets(partitions, retry)
    [workers] = workday.build_assets(partitions, retry)
    raw = [dg.AssetDep(users), dg.AssetDep(workers)]
    mapped, filtered = contacts.build_assets(partitions, raw)
    [distribution_lists] = lists.build_assets(partitions, [dg.AssetDep(filtered), dg.AssetDep(groups)])
    [preview_asset] = preview.build_assets(partitions, [*raw, dg.AssetDep(groups)])
    sync_assets = [users, groups, workers, mapped, filtered, distribution_lists]
    assets = [*sync_assets, preview_asset]
    # Both jobs run in the run's own process, which holds the run's lock (how a dead run is told).
    job = dg.define_asset_job(
        SYNC_JOB, selection=dg.AssetSelection.assets(*sync_assets), executor_def=run_locked_executor,
        description="Sync of one integration: Entra ID users and groups (changes only, or a full round) or the "
                    "Workday report (whole), then contacts, exclusions, lists.",
    )
    preview_job = dg.define_asset_job(
        PREVIEW_JOB, executor_def=run_locked_executor, selection=dg.AssetSelection.assets(
            users, groups, workers, preview_asset),
        description="Preview of a sync of one integration: reads the directory's changes, then reports what "
                    "the sync would change in contacts and lists (table sync_preview) without changing them.",
    )
    database = Path(warehouse_file) if warehouse_file else warehouse_path()
    database.parent.mkdir(parents=True, exist_ok=True)
    return dg.Definitions(
        assets=assets,
        jobs=[job, preview_job],
        schedules=build_schedules(integrations, job),
        sensors=[build_reclaim_sensor()],
        # The UI's Materialize and backfills run the implicit asset job: it holds its run's lock too.
        executor=run_locked_executor,
        resources={
            "integrations": IntegrationsResource(config_path=str(config_file)),
            "graph": GraphResource(demo_dir=str(demo_dir) if demo_dir else None),
            "workday": WorkdayResource(demo_dir=str(demo_dir) if demo_dir else None),
            "warehouse": WarehouseResource(database=str(database)),
        },
    )


defs = build_defs()
