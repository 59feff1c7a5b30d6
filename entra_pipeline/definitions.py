"""dg.Definitions for the sync: gathers assets, checks, the job, schedules and resources.

The integrations file is read when the code location loads: its keys are the partitions and its
crons the schedules. Edit the file, then reload the code location.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from entra_pipeline.config import config_path, load_integrations
from entra_pipeline.defs.assets import build_assets
from entra_pipeline.defs.resources import GraphResource, IntegrationsResource, WarehouseResource
from entra_pipeline.defs.schedules import build_schedules
from entra_pipeline.warehouse import warehouse_path

SYNC_JOB = "entra_sync"


def build_defs(config_file: str | Path | None = None, warehouse_file: str | Path | None = None,
               demo_dir: str | Path | None = None) -> dg.Definitions:
    config_file = Path(config_file) if config_file else config_path()
    integrations = load_integrations(config_file)
    partitions = dg.StaticPartitionsDefinition(integrations.keys)
    assets = build_assets(partitions)
    job = dg.define_asset_job(
        SYNC_JOB, selection=dg.AssetSelection.assets(*assets),
        description="Full sync of one integration: users, groups, contacts, exclusions, lists.",
    )
    database = Path(warehouse_file) if warehouse_file else warehouse_path()
    database.parent.mkdir(parents=True, exist_ok=True)
    return dg.Definitions(
        assets=assets,
        jobs=[job],
        schedules=build_schedules(integrations, job),
        resources={
            "integrations": IntegrationsResource(config_path=str(config_file)),
            "graph": GraphResource(demo_dir=str(demo_dir) if demo_dir else None),
            "warehouse": WarehouseResource(database=str(database)),
        },
    )


defs = build_defs()
