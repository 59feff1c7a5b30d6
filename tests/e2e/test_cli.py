"""The commands a user types: `make sync` (python -m entra_pipeline sync) on the shipped demo
configuration, with the demo tenant started automatically, and the workspace `make ui` loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from entra_pipeline.config import DEFAULT_CONFIG_PATH, load_integrations
from entra_pipeline.definitions import ENTRA_SOURCES_JOB, PREVIEW_JOB, SYNC_JOB, WORKDAY_SOURCES_JOB, build_defs
from entra_pipeline.emulator.population import generate_directory
from entra_pipeline.emulator.workday_workers import generate_workers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster-instance.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENTRA_PIPELINE_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "ENTRA_PIPELINE_DEMO_DIR": str(tmp_path / "demo"),
        "ENTRA_DEMO_CLIENT_SECRET": "demo-client-secret",
        "ENTRA_DEMO_WORKDAY_PASSWORD": "demo-isu-password",
    }
    env.pop("ENTRA_PIPELINE_CONFIG", None)
    yield env
    subprocess.run([sys.executable, "-m", "entra_pipeline", "demo-tenant", "stop"], env=env, cwd=ROOT,
                   capture_output=True, timeout=60)


def test_sync_command_syncs_the_demo_tenant_exactly(demo_env, monkeypatch):
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "sync"], env=demo_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sync demo: ok" in proc.stdout and "sync demo_workday: ok" in proc.stdout

    spec = load_integrations(DEFAULT_CONFIG_PATH).get("demo").source.demo_tenant
    directory = generate_directory(users=spec.users, groups=spec.groups, seed=spec.seed)
    expected = {}
    for u in directory.users:
        ext1 = u["onPremisesExtensionAttributes"]["extensionAttribute1"]
        if u["mail"] and u["accountEnabled"] and u["userType"] != "Guest" and ext1 != "Inactive":
            expected[u["id"]] = u["mail"].lower()
    con = duckdb.connect(demo_env["ENTRA_PIPELINE_WAREHOUSE"], read_only=True)
    try:
        contacts = dict(con.execute("SELECT source_id, contact_id FROM contacts WHERE integration = 'demo'").fetchall())
        lists = {r[0] for r in con.execute("SELECT list_id FROM distribution_lists WHERE kind <> 'custom' "
                                           "AND integration = 'demo'").fetchall()}
        custom = {r[0] for r in con.execute(
            "SELECT contact_id FROM distribution_list_members WHERE list_id = 'custom:it-in-austria'").fetchall()}
        all_members = con.execute("SELECT count(*) FROM distribution_list_members WHERE integration = 'demo'"
                                  ).fetchone()[0]
        members = con.execute("SELECT count(*) FROM distribution_list_members WHERE list_id NOT LIKE 'custom:%' "
                              "AND integration = 'demo'").fetchone()[0]
        errors = {r[0] for r in con.execute(
            "SELECT record FROM import_errors WHERE code = 'missing_unique_id' AND integration = 'demo'").fetchall()}
        workday_contacts = dict(con.execute(
            "SELECT source_id, contact_id FROM contacts WHERE integration = 'demo_workday'").fetchall())
        workday_lists = dict(con.execute(
            "SELECT display_name, member_count FROM distribution_lists WHERE integration = 'demo_workday'").fetchall())
    finally:
        con.close()
    assert contacts == expected
    assert lists == {g["id"] for g in directory.groups if g["mailEnabled"]}
    by_id = {u["id"]: u for u in directory.users}
    assert custom == {cid for uid, cid in expected.items()
                      if by_id[uid]["department"] == "IT" and by_id[uid]["country"] == "AT"} != set()
    expected_members = sum(
        len({oid for t, oid in directory.transitive_members(gid) if t == "#microsoft.graph.user" and oid in expected})
        for gid in lists)
    assert members == expected_members
    assert errors == {u["id"] for u in directory.users if not u["mail"]}
    # The summary printed for the user states the same figures.
    assert f"contacts {len(expected):,} " in proc.stdout
    assert f"lists {len(lists) + 1:,} with {all_members:,} memberships" in proc.stdout
    assert all_members == members + len(custom)

    # The Workday demo: the same tenant's report, its own contacts and generated lists.
    workers = generate_workers(directory, spec.seed)
    kept = {w["Employee_ID"]: w for w in workers if w.get("Email_Address") and w["Worker_Status"] != "Terminated"}
    assert workday_contacts == {wid: w["Email_Address"].lower() for wid, w in kept.items()}
    organisations: dict[str, int] = {}
    for w in kept.values():
        if w.get("Supervisory_Organization"):
            organisations[w["Supervisory_Organization"]] = organisations.get(w["Supervisory_Organization"], 0) + 1
    assert {name: n for name, n in workday_lists.items() if not name.startswith("Site ")
            and name != "Contractors"} == organisations
    assert workday_lists["Contractors"] == sum(1 for w in kept.values() if w.get("Worker_Type") == "Contingent Worker")
    assert f"Workday workers {len(workers):,}" in proc.stdout

    # The merged directory: one row per person, job titles and departments from Workday (the shipped
    # precedence), the rest from Entra ID; whoever either system excludes is left out.
    entra_excluded = {u["mail"].lower() for u in directory.users if u["mail"]} - set(expected.values())
    workday_excluded = {w["Email_Address"].lower() for w in workers
                        if w.get("Email_Address") and w["Worker_Status"] == "Terminated"}
    entra_kept, workday_kept = set(expected.values()), {w["Email_Address"].lower() for w in kept.values()}
    everyone = (entra_kept | workday_kept) - entra_excluded - workday_excluded
    both = entra_kept & workday_kept - entra_excluded - workday_excluded
    con = duckdb.connect(demo_env["ENTRA_PIPELINE_WAREHOUSE"], read_only=True)
    try:
        merged = {r[0]: r[1:] for r in con.execute(
            "SELECT contact_id, integrations, job_title, sources->>'job_title', department, display_name, "
            "sources->>'display_name' FROM all_contacts").fetchall()}
    finally:
        con.close()
    assert set(merged) == everyone
    assert {cid for cid, row in merged.items() if row[0] == ["demo", "demo_workday"]} == both
    assert len(both) > 1000
    user_by_mail = {u["mail"].lower(): u for u in directory.users if u["mail"]}
    worker_by_mail = {w["Email_Address"].lower(): w for w in kept.values()}
    person = next(m for m in sorted(both) if user_by_mail[m]["jobTitle"] != worker_by_mail[m]["Business_Title"])
    assert merged[person][1:] == (worker_by_mail[person]["Business_Title"], "demo_workday",
                                  worker_by_mail[person]["Supervisory_Organization"],
                                  user_by_mail[person]["displayName"], "demo")
    assert (f"merged directory (all_contacts): {len(everyone):,} people, {len(both):,} of them in several "
            "integrations") in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "explain", person], env=demo_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [
        f"{person}: in the merged directory (all_contacts), from demo, demo_workday",
        f"  email: {person!r} (from demo)"]
    assert f"  job_title: {worker_by_mail[person]['Business_Title']!r} (from demo_workday)" in proc.stdout

    # The run is in the instance `make ui` shows.
    monkeypatch.setenv("DAGSTER_HOME", demo_env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    # Each sync is its source run and the contacts run that followed it.
    assert sorted((r.job_name, r.tags.get("dagster/partition"), r.is_success) for r in runs) == sorted([
        (SYNC_JOB, "demo", True), (SYNC_JOB, "demo_workday", True),
        (ENTRA_SOURCES_JOB, "demo", True), (WORKDAY_SOURCES_JOB, "demo_workday", True)])

    # The demo tenant is still running: a preview reads the (no) changes and would change nothing.
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "preview", "demo"], env=demo_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "preview demo: ok" in proc.stdout and "would change: no changes" in proc.stdout
    # An analyst's query, read-only.
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "query",
                           "SELECT read_mode, contacts_added FROM sync_runs WHERE integration = 'demo'"],
                          env=demo_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "full" in proc.stdout and f"{len(expected)}" in proc.stdout

    # The same query as CSV and as JSON, for scripts.
    sql = "SELECT integration, count(*) AS contacts FROM contacts GROUP BY ALL ORDER BY 1"
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "query", "--format", "csv", sql], env=demo_env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["integration,contacts", f"demo,{len(expected)}",
                                        f"demo_workday,{len(workday_contacts)}"]
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "query", "--format", "json", sql], env=demo_env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout) == [{"integration": "demo", "contacts": len(expected)},
                                       {"integration": "demo_workday", "contacts": len(workday_contacts)}]

    # A restarted demo tenant knows none of its old delta tokens: the next sync reads everything
    # again and says so, without a warning (it is the expected path of every `make sync`).
    subprocess.run([sys.executable, "-m", "entra_pipeline", "demo-tenant", "stop"], env=demo_env, cwd=ROOT,
                   capture_output=True, timeout=60)
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "sync", "demo"], env=demo_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "users: the demo tenant restarted since the last sync (it keeps no delta tokens)" in output
    assert " - WARNING - " not in output

    # Every example query the README gives analysts runs on this warehouse, with the DuckDB installed.
    block = (ROOT / "README.md").read_text(encoding="utf-8").split("Example queries:", 1)[1]
    block = block.split("```sql", 1)[1].split("```", 1)[0]
    code = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
    statements = [part.strip() for part in code.split(";") if part.strip()]
    assert len(statements) >= 15
    con = duckdb.connect(demo_env["ENTRA_PIPELINE_WAREHOUSE"], read_only=True)
    try:
        for statement in statements:
            con.execute(statement).fetchall()
    finally:
        con.close()


def test_workspace_loads_with_partitions_schedules_and_checks(demo_env):
    proc = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate",
                           "-w", "workspace.yaml"], env=demo_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The dg project: what `make ui` (dg dev) loads, checked and listed without a superseded-command warning.
    env = {**demo_env, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    for command in (["check", "defs"], ["list", "defs"]):
        proc = subprocess.run([str(Path(sys.executable).with_name("dg")), *command], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Supersession" not in proc.stdout + proc.stderr and "superseded" not in proc.stdout + proc.stderr
    defs = build_defs(DEFAULT_CONFIG_PATH)
    job = defs.resolve_job_def(SYNC_JOB)
    assert job.partitions_def.get_partition_keys() == ["demo", "demo_workday"]
    assert [(s.name, s.cron_schedule, s.execution_timezone) for s in defs.schedules] == [
        ("sync_demo", "0 6 * * *", "UTC"), ("sync_demo_workday", "30 6 * * *", "UTC")]
    # Every job the UI can launch (the two jobs, Materialize and backfills) runs in its run's one
    # process, which holds the run's lock: how a dead run is told from a live one.
    assert {job.executor_def.name for job in (
        defs.resolve_job_def(SYNC_JOB), defs.resolve_job_def(PREVIEW_JOB), defs.resolve_job_def(ENTRA_SOURCES_JOB),
        defs.resolve_job_def(WORKDAY_SOURCES_JOB), defs.resolve_implicit_global_asset_job_def())} == {
        "in_process_run_locked"}
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {"all_directory_users_read", "all_directory_groups_read", "directory_users_mapped",
                      "contacts_have_unique_id", "unique_contact_ids_distinct", "contact_values_valid",
                      "extension_attributes_decided",
                      "exclusions_keep_contacts", "selected_lists_resolved", "no_list_removed",
                      "directory_not_emptied", "contact_removals_within_limit", "membership_removals_within_limit",
                      "leavers_memberships_within_limit", "directory_removals_within_limit",
                      "directory_memberships_within_limit",
                      "no_orphaned_integrations", "certificate_not_expiring", "directory_values_fit",
                      "workers_identified", "workday_report_not_emptied", "report_columns_decided",
                      "rule_columns_in_report", "integrations_valid"}


def test_invalid_config_fails_with_one_line(tmp_path, demo_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_CONFIG_PATH.read_text().replace('cron: "0 6 * * *"', 'cron: "soon"'))
    env = {**demo_env, "ENTRA_PIPELINE_CONFIG": str(bad)}
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "sync"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{bad}: integration 'demo', field 'schedule.cron': invalid cron expression "
                                   "'soon' (expected five fields, e.g. '0 6 * * *')")
    assert not Path(demo_env["ENTRA_PIPELINE_WAREHOUSE"]).exists()
    # The same file named by --config, before the command.
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "--config", str(bad), "sync"], env=demo_env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr.strip()) == (2, f"{bad}: integration 'demo', field 'schedule.cron': "
                                                         "invalid cron expression 'soon' (expected five fields, "
                                                         "e.g. '0 6 * * *')")
