"""The jobs, and one sync of one integration run in this process.

A sync is two runs: the integration's source job (Entra ID users and groups, or the Workday
report), then the contacts job for the same partition (mapped and filtered contacts, lists). The
two source types have different partitions, and a Dagster job spans one partitions definition
only. Both runs record their stages in the warehouse under the source run's id (tag
``SYNC_RUN_TAG``), so the run log still shows one sync. Schedules launch a source job; the sensor
in schedules.py launches the contacts job when it succeeds, unless the launcher runs it itself
(``FOLLOW_TAG``), as the CLI does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import dagster as dg

from entra_pipeline.run_locks import run_locked_executor
from entra_pipeline.sync import names, read_ahead

ENTRA_SOURCES_JOB = "sync_entra_sources"
WORKDAY_SOURCES_JOB = "sync_workday_sources"
SYNC_JOB = "entra_sync"  # the contacts job: mapped and filtered contacts, lists
PREVIEW_JOB = "entra_preview"
SOURCE_JOBS = (ENTRA_SOURCES_JOB, WORKDAY_SOURCES_JOB)

#: The run id a sync's stages are recorded under in the warehouse: its source run's.
SYNC_RUN_TAG = "entra_pipeline/sync_run"
#: On a source run: the sensor follows it with the contacts job only without this tag ("in_process":
#: its launcher runs the next job itself; "preview": a preview follows, by hand).
FOLLOW_TAG = "entra_pipeline/then"
IN_PROCESS = "in_process"


def build_jobs(entra: list, workday: list, contacts: list, preview: list) -> list[dg.UnresolvedAssetJobDefinition]:
    """The jobs for the configured source types; each runs its steps in the run's one process,
    which holds the run's lock (how a dead run is told)."""
    jobs = [
        dg.define_asset_job(SYNC_JOB, selection=dg.AssetSelection.assets(*contacts), executor_def=run_locked_executor,
                            description="Contacts, exclusions and lists of one integration, from its raw tables "
                                        "(after its source job; the sensor follow_source_runs starts it)."),
        dg.define_asset_job(PREVIEW_JOB, selection=dg.AssetSelection.assets(*preview),
                            executor_def=run_locked_executor,
                            description="Preview of a sync of one integration from its raw tables: what the sync "
                                        "would change in contacts and lists (table sync_preview), without changing "
                                        "them. Run its source job first to read the directory's changes."),
    ]
    if entra:
        jobs.append(dg.define_asset_job(
            ENTRA_SOURCES_JOB, selection=dg.AssetSelection.assets(*entra), executor_def=run_locked_executor,
            description="Entra ID users and groups of one integration: changes only, or a full round."))
    if workday:
        jobs.append(dg.define_asset_job(
            WORKDAY_SOURCES_JOB, selection=dg.AssetSelection.assets(*workday), executor_def=run_locked_executor,
            description="The Workday report of one integration, read whole."))
    return jobs


def source_job_of(defs: dg.Definitions, key: str) -> dg.JobDefinition:
    """The source job whose partitions hold integration ``key``."""
    for name in SOURCE_JOBS:
        try:
            job = defs.resolve_job_def(name)
        except Exception:  # noqa: BLE001 - no integration of that source type is configured
            continue
        if key in job.partitions_def.get_partition_keys():
            return job
    raise KeyError(f"no source job has integration {key!r}")


def config_for(job: dg.JobDefinition, run_config: dict) -> dict:
    """The part of a whole sync's run config that concerns ``job``: the config of its own steps
    (allow_removals goes to the writers, full_resync to the Graph readers)."""
    steps = {key.path[-1] for key in job.asset_layer.executable_asset_keys}
    ops = {step: config for step, config in run_config.get("ops", {}).items() if step in steps}
    return {**{k: v for k, v in run_config.items() if k != "ops"}, **({"ops": ops} if ops else {})}


def runnable(parents: dict[dg.AssetKey, frozenset[dg.AssetKey]], failed: set[dg.AssetKey]) -> list[dg.AssetKey]:
    """The stages of ``parents`` (stage -> its inputs, in flow order) none of whose inputs failed,
    directly or through a stage that cannot run: with the groups' read failed the contacts still
    sync, and the lists wait."""
    failed = set(failed)
    ready = []
    for key, inputs in parents.items():
        if inputs & failed:
            failed.add(key)
        else:
            ready.append(key)
    return ready


def stage_inputs(assets) -> dict[dg.AssetKey, frozenset[dg.AssetKey]]:
    """Each stage of ``assets`` (AssetsDefinitions, in flow order) with its inputs."""
    return {asset.key: frozenset(asset.asset_deps[asset.key]) for asset in assets}


def stage_parents(defs: dg.Definitions, job: dg.JobDefinition) -> dict[dg.AssetKey, frozenset[dg.AssetKey]]:
    """The stages of ``job`` with their inputs, in flow order."""
    keys = [dg.AssetKey(stage) for stage in names.CONTACT_STAGES + (names.SYNC_PREVIEW,)]
    return stage_inputs(defs.get_assets_def(key) for key in keys if key in job.asset_layer.executable_asset_keys)


def runnable_after(defs: dg.Definitions, job: dg.JobDefinition, source: dg.ExecuteInProcessResult | None,
                   expected: set[dg.AssetKey]) -> list[dg.AssetKey]:
    """The stages of ``job`` that can run after the source run (None: none was needed): the source
    assets it was to write (``expected``) and did not are failed inputs."""
    done = set() if source is None else {
        dg.AssetKey(e.step_key) for e in source.all_events if e.event_type_value == "STEP_SUCCESS"}
    return runnable(stage_parents(defs, job), expected - done if source is not None else set())


@dataclass
class SyncResult:
    """One sync of one integration: its source run and, unless nothing could follow it, its
    contacts (or preview) run. ``run_id``: the id its stages are recorded under in the warehouse."""

    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def run_id(self) -> str:
        return self.results[0].run_id if self.results else ""

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.results]

    @property
    def all_events(self) -> list:
        return [e for r in self.results for e in r.all_events]

    def get_asset_check_evaluations(self) -> list:
        return [e for r in self.results for e in r.get_asset_check_evaluations()]

    def get_asset_materialization_events(self) -> list:
        return [e for r in self.results for e in r.get_asset_materialization_events()]

    def get_step_failure_events(self) -> list:
        return [e for r in self.results for e in r.get_step_failure_events()]


def run_sync(defs: dg.Definitions, key: str, instance: dg.DagsterInstance, *, preview: bool = False,
             run_config: dict | None = None, tags: dict | None = None, execute=None,
             stages: list[str] | None = None) -> SyncResult:
    """Sync (or preview) integration ``key`` in this process: its source job, then the contacts
    (or preview) job for the stages whose inputs committed. ``run_config`` is the whole sync's
    (each run gets its own steps' part); ``execute(job, **kwargs)`` runs one job (default:
    ``job.execute_in_process``; the CLI wraps it in the run's lock). ``stages``: only these."""
    execute = execute or (lambda job, **kwargs: job.execute_in_process(**kwargs))
    run_config = run_config or {}
    tags = {**(tags or {}), FOLLOW_TAG: IN_PROCESS}
    only = None if stages is None else {dg.AssetKey(stage) for stage in stages}
    try:
        source = source_job_of(defs, key)
    except KeyError:
        # Not in the code location: say why, as the integrations file has it (a broken integration's line).
        defs.resources["integrations"].load().get(key)
        raise
    expected = {k for k in source.asset_layer.executable_asset_keys if only is None or k in only}
    result = SyncResult()
    source_result = None
    if expected:  # an empty asset_selection would mean the whole job to Dagster
        run_id = str(uuid.uuid4())
        # execute_in_process runs the steps here whatever the job's executor: they may read ahead.
        with read_ahead.steps_here(run_id, [k.path[-1] for k in expected]):
            source_result = execute(source, partition_key=key, instance=instance, raise_on_error=False, tags=tags,
                                    run_config=config_for(source, run_config), run_id=run_id,
                                    asset_selection=None if only is None else sorted(expected, key=str))
        result.results.append(source_result)
    follow = defs.resolve_job_def(PREVIEW_JOB if preview else SYNC_JOB)
    selection = [k for k in runnable_after(defs, follow, source_result, expected) if only is None or k in only]
    if selection:
        follow_tags = {**tags, SYNC_RUN_TAG: result.run_id} if source_result is not None else tags
        result.results.append(execute(follow, partition_key=key, instance=instance, raise_on_error=False,
                                      asset_selection=selection, tags=follow_tags,
                                      run_config=config_for(follow, run_config)))
    return result


def contacts_run_config(allow_removals: bool, selection: list[dg.AssetKey] | None = None) -> dict:
    """The contacts job's run config approving this run's removals (the deletion guard), or none;
    for the stages of ``selection`` only, when given."""
    writers = [stage for stage in names.GUARDED_STAGES
               if selection is None or dg.AssetKey(stage) in selection]
    if not allow_removals or not writers:
        return {}
    return {"ops": {stage: {"config": {"allow_removals": True}} for stage in writers}}
