"""The Dagster definitions as the UI and the daemon see them: per-source partitions, partitioned
checks, in-process jobs, a schedule per integration starting its source job, and the sensor that
follows a source run with the contacts job for the same integration."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from entra_pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, load_integrations
from entra_pipeline.definitions import ENTRA_SOURCES_JOB, PREVIEW_JOB, SYNC_JOB, WORKDAY_SOURCES_JOB, build_defs
from entra_pipeline.defs.integrations_file import CHECK, CHECK_JOB, INTEGRATIONS_FILE, WATCH_SENSOR
from entra_pipeline.defs.resources import IntegrationsResource
from entra_pipeline.defs.jobs import SYNC_RUN_TAG, stage_parents
from entra_pipeline.defs.schedules import FOLLOW_FAILED_SENSOR, FOLLOW_SENSOR, follow_request

GRAPH_ASSETS = ("raw_graph_users", "raw_graph_groups")


def config_with(tmp_path, keys: list[str]):
    """The shipped demo configuration with only the integrations ``keys`` (demo: Entra ID,
    demo_workday: Workday), plus a second Entra ID integration when "demo2" is asked for."""
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    by_key = {i["key"]: i for i in document["integrations"]}
    if "demo2" in keys:
        by_key["demo2"] = {**by_key["demo"], "key": "demo2", "title": "Demo 2"}
    document["integrations"] = [by_key[k] for k in keys]
    document.pop("contacts_directory")  # it names both demo integrations
    path = tmp_path / "integrations.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def defs(tmp_path):
    return build_defs(config_with(tmp_path, ["demo", "demo_workday", "demo2"]), tmp_path / "warehouse.duckdb")


def partition_keys(defs: dg.Definitions, asset: str) -> list[str]:
    return defs.resolve_asset_graph().get(dg.AssetKey(asset)).partitions_def.get_partition_keys()


def test_source_assets_are_partitioned_by_their_source_type(defs):
    for asset in GRAPH_ASSETS:
        assert partition_keys(defs, asset) == ["demo", "demo2"]
    assert partition_keys(defs, "raw_workday_workers") == ["demo_workday"]
    for asset in ("mapped_contacts", "filtered_contacts", "distribution_lists", "sync_preview"):
        assert partition_keys(defs, asset) == ["demo", "demo_workday", "demo2"]


def test_a_source_type_nobody_reads_has_no_assets_and_no_job(tmp_path):
    only_entra = build_defs(config_with(tmp_path, ["demo"]), tmp_path / "warehouse.duckdb")
    keys = {key.path[-1] for key in only_entra.resolve_asset_graph().get_all_asset_keys()}
    assert "raw_workday_workers" not in keys and set(GRAPH_ASSETS) <= keys
    assert {job.name for job in only_entra.jobs} == {ENTRA_SOURCES_JOB, SYNC_JOB, PREVIEW_JOB, CHECK_JOB}


def test_every_integration_depends_on_its_own_source_partitions_only(defs):
    # What a backfill over every integration asks of each edge: the same integration upstream where
    # the source has it, and nothing "required but missing" for the other source type.
    graph = defs.resolve_asset_graph()
    everyone = ["demo", "demo_workday", "demo2"]
    edges = []
    for stage in ("mapped_contacts", "distribution_lists", "sync_preview"):
        node = graph.get(dg.AssetKey(stage))
        for parent_key in node.parent_keys:
            parent = graph.get(parent_key)
            if parent.partitions_def == node.partitions_def:
                continue
            mapping = node.partition_mappings[parent_key]
            edges.append((stage, parent_key.path[-1]))
            for key in everyone:
                result = mapping.get_upstream_mapped_partitions_result_for_partitions(
                    node.partitions_def.subset_with_partition_keys([key]), node.partitions_def,
                    parent.partitions_def)
                own = key in parent.partitions_def.get_partition_keys()
                assert list(result.partitions_subset.get_partition_keys()) == ([key] if own else []), (stage, key)
                assert not list(result.required_but_nonexistent_subset.get_partition_keys()), (stage, parent_key, key)
    assert len(edges) == 6  # users and workers into mapped_contacts, groups into lists, all three into the preview


def test_every_check_is_partitioned_like_its_asset(defs):
    graph = defs.resolve_asset_graph()
    specs = [spec for asset in defs.assets if isinstance(asset, dg.AssetsDefinition) for spec in asset.check_specs]
    assert len(specs) == 23
    # The one check not about an integration: the integrations file's own.
    assert set(graph.asset_check_keys) - {spec.key for spec in specs} == {
        dg.AssetCheckKey(dg.AssetKey(INTEGRATIONS_FILE), CHECK)}
    for spec in specs:
        assert spec.partitions_def is not None, spec.name
        assert spec.partitions_def == graph.get(spec.asset_key).partitions_def, spec.name


def test_every_job_runs_in_process_holding_its_run_lock(defs):
    jobs = [defs.resolve_job_def(name) for name in (ENTRA_SOURCES_JOB, WORKDAY_SOURCES_JOB, SYNC_JOB, PREVIEW_JOB)]
    jobs += [defs.resolve_implicit_global_asset_job_def()]
    assert {job.executor_def.name for job in jobs} == {"in_process_run_locked"}
    # The UI's Materialize of the contact assets alone, and of the sources alone, too.
    for selection in (["mapped_contacts"], ["raw_workday_workers"]):
        job = defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey(s) for s in selection])
        assert job.executor_def.name == "in_process_run_locked"


def test_a_schedule_per_integration_launches_its_source_job(defs):
    schedules = {s.name: s for s in defs.schedules}
    assert {name: s.job_name for name, s in schedules.items()} == {
        "sync_demo": ENTRA_SOURCES_JOB, "sync_demo2": ENTRA_SOURCES_JOB, "sync_demo_workday": WORKDAY_SOURCES_JOB}
    for key in ("demo", "demo_workday"):
        request = schedules[f"sync_{key}"](dg.build_schedule_context())
        assert request.partition_key == key


def test_the_sensors_follow_finished_source_runs_with_the_contacts_job(defs):
    sensors = {s.name: s for s in defs.sensors if s.name in (FOLLOW_SENSOR, FOLLOW_FAILED_SENSOR)}
    assert {name: s.job_name for name, s in sensors.items()} == {FOLLOW_SENSOR: SYNC_JOB, FOLLOW_FAILED_SENSOR: SYNC_JOB}
    # A run that wrote nothing (no step succeeded, as in this empty instance) is not followed.
    run = dg.DagsterRun(job_name=WORKDAY_SOURCES_JOB, run_id="source-run", tags={"dagster/partition": "demo_workday"})
    event = dg.DagsterEvent(event_type_value="PIPELINE_FAILURE", job_name=WORKDAY_SOURCES_JOB)
    skipped = sensors[FOLLOW_FAILED_SENSOR](dg.build_run_status_sensor_context(
        sensor_name=FOLLOW_FAILED_SENSOR, dagster_event=event, dagster_instance=dg.DagsterInstance.ephemeral(),
        dagster_run=run))
    assert isinstance(skipped, dg.SkipReason) and "wrote nothing" in skipped.skip_message


def test_what_follows_a_source_run(defs):
    sources = {name: frozenset(defs.resolve_job_def(name).asset_layer.executable_asset_keys)
               for name in (ENTRA_SOURCES_JOB, WORKDAY_SOURCES_JOB)}
    parents = stage_parents(defs, defs.resolve_job_def(SYNC_JOB))
    users, groups, workers = (dg.AssetKey(n) for n in ("raw_graph_users", "raw_graph_groups", "raw_workday_workers"))

    def follow(job: str, done: set, tags: dict | None = None, selection=None):
        run = dg.DagsterRun(job_name=job, run_id="source-run", asset_selection=selection,
                            tags={"dagster/partition": "demo" if job != WORKDAY_SOURCES_JOB else "demo_workday",
                                  **(tags or {})})
        request = follow_request(run, done, sources, parents)
        return request if isinstance(request, dg.SkipReason) else (
            [k.path[-1] for k in request.asset_selection], request)

    everything = ["mapped_contacts", "filtered_contacts", "distribution_lists", "all_contacts"]
    stages, request = follow(WORKDAY_SOURCES_JOB, {workers})
    assert stages == everything
    assert (request.partition_key, request.run_key, request.tags[SYNC_RUN_TAG], request.run_config) == (
        "demo_workday", "source-run", "source-run", {})
    # The groups' read failed: the contacts still sync, the lists wait. The users' read failed: nothing.
    assert follow(ENTRA_SOURCES_JOB, {users})[0] == ["mapped_contacts", "filtered_contacts", "all_contacts"]
    assert "wrote nothing" in follow(ENTRA_SOURCES_JOB, {groups}).skip_message
    # An operator's approval of removals goes with it, to the writers that run.
    stages, approved = follow(ENTRA_SOURCES_JOB, {users}, {"allow_removals": "true"})
    assert approved.run_config == {"ops": {"filtered_contacts": {"config": {"allow_removals": True}},
                                           "all_contacts": {"config": {"allow_removals": True}}}}
    # Materialize of source assets from the asset graph is followed; a backfill's runs and runs with
    # contact assets in them are not (they run what was selected).
    assert follow("__ASSET_JOB", {users}, selection={users})[0] == everything
    for tags, selection in (({"dagster/backfill": "b1"}, {users}), ({}, {users, dg.AssetKey("mapped_contacts")})):
        assert isinstance(follow("__ASSET_JOB", {users}, tags, selection), dg.SkipReason)
    # A run whose launcher runs the contacts job itself (the CLI), or that a preview follows, is left alone.
    for then in ("in_process", "preview"):
        skipped = follow(ENTRA_SOURCES_JOB, {users, groups}, {"entra_pipeline/then": then})
        assert skipped.skip_message == f"run source-run is not followed: tag entra_pipeline/then={then}"


def test_the_shipped_configuration_loads(tmp_path):
    defs = build_defs(DEFAULT_CONFIG_PATH, tmp_path / "warehouse.duckdb")
    assert [s.name for s in defs.schedules] == [f"sync_{k}" for k in load_integrations(DEFAULT_CONFIG_PATH).keys]


def file_check(defs: dg.Definitions) -> dg.AssetCheckEvaluation:
    result = defs.resolve_job_def(CHECK_JOB).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK
    return evaluation


def test_a_broken_integration_is_left_out_and_named_while_the_others_keep_their_schedules(tmp_path):
    path = config_with(tmp_path, ["demo", "demo_workday", "demo2"])
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    # demo2's source is demo's (a YAML alias): give it its own before breaking it.
    document["integrations"][2]["source"] = {**document["integrations"][2]["source"], "page_size": "lots"}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as strict:  # make sync and check-config refuse the file
        load_integrations(path)
    line = str(strict.value)
    assert "demo2" in line and "page_size" in line and "\n" not in line

    defs = build_defs(path, tmp_path / "warehouse.duckdb")
    assert {s.name: s.job_name for s in defs.schedules} == {
        "sync_demo": ENTRA_SOURCES_JOB, "sync_demo_workday": WORKDAY_SOURCES_JOB}
    for asset in GRAPH_ASSETS:
        assert partition_keys(defs, asset) == ["demo"]
    assert partition_keys(defs, "mapped_contacts") == ["demo", "demo_workday"]
    evaluation = file_check(defs)
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert evaluation.description == f"demo2: {line}"
    assert evaluation.metadata["left_out"].value == ["demo2"]
    # A run of the broken integration fails with the same line; the others load.
    resource = IntegrationsResource(config_path=str(path))
    assert resource.get("demo").key == "demo"
    with pytest.raises(dg.Failure) as run_error:  # not retried: a retry cannot fix the file
        resource.get("demo2")
    assert (run_error.value.description, run_error.value.allow_retries) == (line, False)
    with pytest.raises(dg.Failure) as moved:  # the code location was loaded when demo read Entra ID
        resource.get("demo", "workday")
    assert moved.value.description == ("integration 'demo' now reads entra, not workday: reload the code location "
                                       "(its partitions were made from the file as it was)")


def test_an_unreadable_file_leaves_every_integration_out_and_says_why(tmp_path):
    path = tmp_path / "integrations.yaml"
    path.write_text("integrations: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as strict:
        load_integrations(path)
    defs = build_defs(path, tmp_path / "warehouse.duckdb")
    assert list(defs.schedules) == []
    evaluation = file_check(defs)
    assert not evaluation.passed and evaluation.description.endswith(str(strict.value))


def test_a_valid_file_passes_its_check_and_the_sensor_watches_its_content(defs, tmp_path):
    evaluation = file_check(defs)
    assert evaluation.passed and evaluation.description == "3 integrations, all valid"
    sensor = next(s for s in defs.sensors if s.name == WATCH_SENSOR)
    path = tmp_path / "integrations.yaml"
    original = path.read_text(encoding="utf-8")

    def evaluate(cursor):
        context = dg.build_sensor_context(cursor=cursor)
        result = sensor(context)
        return isinstance(result, dg.RunRequest), context.cursor

    checked, cursor = evaluate(None)
    assert checked
    assert evaluate(cursor) == (False, cursor)  # unchanged: not checked again
    path.write_text("integrations: []\n", encoding="utf-8")
    checked, edited = evaluate(cursor)
    assert checked and edited != cursor
    path.write_text(original, encoding="utf-8")  # back to the first content: checked again
    assert evaluate(edited) == (True, cursor)
