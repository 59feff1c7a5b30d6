"""dg.Definitions for the sync: assets, checks, jobs, schedules, sensors and resources.

The integrations file is read when the code location loads: its keys are the partitions (the
source assets' over the integrations of their source type, the contact assets' over all) and its
crons the schedules. Edit the file, then reload the code location.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from entra_pipeline.config import Integration, RunSettings, config_path
from entra_pipeline.config.isolation import load_for_dagster
from entra_pipeline.defs import contacts, directory, entra, integrations_file, lists, preview, workday
from entra_pipeline.defs.jobs import (ENTRA_SOURCES_JOB, PREVIEW_JOB, SYNC_JOB, WORKDAY_SOURCES_JOB, build_jobs,
                                      run_sync, stage_inputs)
from entra_pipeline.defs.resources import GraphResource, IntegrationsResource, WarehouseResource, WorkdayResource
from entra_pipeline.defs.schedules import build_follow_sensors, build_reclaim_sensor, build_schedules
from entra_pipeline.defs.stage import source_retry
from entra_pipeline.run_locks import run_locked_executor
from entra_pipeline.transform.fields import ENTRA, WORKDAY
from entra_pipeline.warehouse.connection import warehouse_path

__all__ = ["ENTRA_SOURCES_JOB", "PREVIEW_JOB", "SYNC_JOB", "WORKDAY_SOURCES_JOB", "build_defs", "defs", "run_sync"]


def _partitions(integrations: list[Integration]) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([i.key for i in integrations])


def _identity(asset: dg.AssetsDefinition) -> dg.AssetDep:
    # The same integration upstream. A static mapping names the source's own integrations only: for
    # an integration of the other source type there is simply no upstream partition (an identity
    # mapping would call it missing, and backfills over every integration would refuse to start).
    keys = asset.partitions_def.get_partition_keys()
    return dg.AssetDep(asset, partition_mapping=dg.StaticPartitionMapping({key: key for key in keys}))


def build_assets(integrations: list[Integration], runs: RunSettings) -> tuple[dict[str, list], list, list]:
    """(source assets by source type, contact and list assets, preview assets). A source type no
    integration reads has no assets."""
    retry = source_retry(runs)
    by_kind = {kind: [i for i in integrations if i.kind == kind] for kind in (ENTRA, WORKDAY)}
    sources = {ENTRA: entra.build_assets(_partitions(by_kind[ENTRA]), retry) if by_kind[ENTRA] else [],
               WORKDAY: workday.build_assets(_partitions(by_kind[WORKDAY]), retry) if by_kind[WORKDAY] else []}
    groups = [a for a in sources[ENTRA] if a.key.path[-1] == "raw_graph_groups"]
    people = [a for a in sources[ENTRA] + sources[WORKDAY] if a not in groups]
    everyone = _partitions(integrations)
    mapped, filtered = contacts.build_assets(everyone, [_identity(a) for a in people])
    distribution_lists = lists.build_assets(everyone, [dg.AssetDep(filtered)] + [_identity(a) for a in groups])
    merged = directory.build_assets(everyone, [dg.AssetDep(filtered)])
    previews = preview.build_assets(everyone, [_identity(a) for a in people + groups])
    return sources, [mapped, filtered, *distribution_lists, *merged], previews


def build_defs(config_file: str | Path | None = None, warehouse_file: str | Path | None = None,
               demo_dir: str | Path | None = None) -> dg.Definitions:
    config_file = Path(config_file) if config_file else config_path()
    # A broken integration is left out (no partition, no schedule) and named by the integrations
    # file's check; the others keep their schedules. `make sync` and check-config stay strict.
    configured = load_for_dagster(config_file)
    integrations_file.report_broken(configured)
    integrations = list(configured.integrations)
    file_spec, file_check, file_job, file_watch = integrations_file.build(config_file, configured.keys)
    sources, contact_assets, previews = build_assets(integrations, configured.runs)
    jobs = build_jobs(sources[ENTRA], sources[WORKDAY], contact_assets, previews)
    by_name = {job.name: job for job in jobs}
    source_jobs = {kind: by_name[name] for kind, name in ((ENTRA, ENTRA_SOURCES_JOB), (WORKDAY, WORKDAY_SOURCES_JOB))
                   if name in by_name}
    source_assets = {name: frozenset(key for asset in sources[kind] for key in asset.keys)
                     for kind, name in ((ENTRA, ENTRA_SOURCES_JOB), (WORKDAY, WORKDAY_SOURCES_JOB)) if sources[kind]}
    database = Path(warehouse_file) if warehouse_file else warehouse_path()
    database.parent.mkdir(parents=True, exist_ok=True)
    return dg.Definitions(
        assets=[*sources[ENTRA], *sources[WORKDAY], *contact_assets, *previews, file_spec],
        asset_checks=[file_check],
        jobs=[*jobs, file_job],
        schedules=build_schedules(integrations, source_jobs),
        sensors=[*build_follow_sensors(source_assets, by_name[SYNC_JOB], stage_inputs(contact_assets)),
                 build_reclaim_sensor(), file_watch],
        # The UI's Materialize and backfills run the implicit asset jobs: they hold their run's lock too.
        executor=run_locked_executor,
        resources={
            "integrations": IntegrationsResource(config_path=str(config_file)),
            "graph": GraphResource(demo_dir=str(demo_dir) if demo_dir else None),
            "workday": WorkdayResource(demo_dir=str(demo_dir) if demo_dir else None),
            "warehouse": WarehouseResource(database=str(database)),
        },
    )


@dg.definitions
def load_defs() -> dg.Definitions:
    """The code location `dg dev`, `dg check defs` and `dg list defs` load."""
    return build_defs()


def __getattr__(name: str):
    # `defs` (what the top-level definitions.py and workspace.yaml load) is built when asked for, not
    # on import: the CLI imports this module without loading the code location.
    if name == "defs":
        return build_defs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
