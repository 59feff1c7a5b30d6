"""A Workday integration synced end to end: the demo tenant's Workday report over HTTPS, real
Dagster runs and a real DuckDB file. Exact contacts, exclusions and typed-field errors; the Entra
assets do nothing for it (and the Workday asset nothing for an Entra integration); each broken
answer fails the run with one clear line and changes nothing."""

from __future__ import annotations

import copy

import duckdb
import pytest

from entra_pipeline.sync import checks as c
from entra_pipeline.emulator.workday_workers import generate_workers
from entra_pipeline.transform.lists import generated_list_id

from tests.support.integrations import (ALLOW_REMOVALS, WORKDAY_PASSWORD_ENV, integration, workday_integration,
                                       write_config)
from tests.support.runs import Sync, failure_messages, recorded_text
from tests.support.tenant import WORKDAY_CLIENT_SECRET, WORKDAY_PASSWORD, WORKDAY_REFRESH_TOKEN, WORKDAY_SEED


PASSWORD_ENV, PASSWORD, SEED = WORKDAY_PASSWORD_ENV, WORKDAY_PASSWORD, WORKDAY_SEED
REPORT = "/ccx/service/customreport2/"


@pytest.fixture(autouse=True)
def _clean(workday):
    entries = copy.deepcopy(workday.workday.entries)  # tests change workers in place
    yield
    workday.faults.clear()
    workday.workday.entries = entries


hr_integration = workday_integration


@pytest.fixture
def hr_sync(tmp_path, monkeypatch, workday):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)

    def make(*integrations: dict) -> Sync:
        return Sync(write_config(tmp_path / "integrations.yaml", *(integrations or (hr_integration(workday),))),
                    tmp_path / "warehouse.duckdb")

    return make


def expected(workers: list[dict]) -> dict[str, str]:
    """Employee_ID -> contact id: workers with an email, neither Terminated nor On Leave."""
    return {w["Employee_ID"]: w["Email_Address"].strip().lower() for w in workers
            if w.get("Email_Address") and w["Worker_Status"] not in ("Terminated", "On Leave")}


def test_workday_workers_become_contacts(hr_sync, workday, hr_directory):
    workers = generate_workers(hr_directory, SEED)
    sync = hr_sync()
    result = sync.run("hr")
    assert result.success, failure_messages(result)
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts WHERE integration = 'hr'")) == expected(workers)
    assert dict(sync.query("SELECT source_id, rule FROM excluded_contacts")) == {
        w["Employee_ID"]: "Left or on leave" for w in workers
        if w.get("Email_Address") and w["Worker_Status"] in ("Terminated", "On Leave")}
    # Fields from the report's columns, Workday dates with their zone suffix read as the date.
    sample = next(w for w in workers if w["Employee_ID"] in expected(workers) and w["Hire_Date"].endswith("-08:00")
                  and w.get("Standard_Hours", "").isdigit())
    row = sync.query("SELECT first_name, job_title, department, CAST(hire_date AS VARCHAR), weekly_hours, "
                     "cost_center FROM contacts WHERE source_id = ?", [sample["Employee_ID"]])
    assert row == [(sample["First_Name"], sample["Business_Title"], sample["Supervisory_Organization"],
                    sample["Hire_Date"][:10], float(sample["Standard_Hours"]), sample.get("Cost_Center"))]
    # The planted bad values are typed-field errors naming the worker; the worker is still imported.
    bad = {(w["Employee_ID"], field) for w in workers for field, value in w.items()
           if (field, value) in {("Hire_Date", "2023-02-29-08:00"), ("Hire_Date", "2024-13-01Z"),
                                 ("Standard_Hours", "n/a"), ("Standard_Hours", "40,0")}}
    errors = set(sync.query("SELECT record, field FROM import_errors WHERE code = 'invalid_value'"))
    assert errors == {(wid, {"Hire_Date": "hire_date", "Standard_Hours": "weekly_hours"}[f]) for wid, f in bad}
    assert bad
    # The Entra assets have no partition for a Workday integration: they neither ran nor checked anything.
    assert sync.query("SELECT count(*) FROM raw_graph_users") == [(0,)]
    assert {m.asset_key.path[-1] for m in result.get_asset_materialization_events()} == {
        "raw_workday_workers", "mapped_contacts", "filtered_contacts", "distribution_lists", "all_contacts"}
    assert not {c.RAW_USERS_COMPLETE, c.RAW_GROUPS_COMPLETE, c.DIRECTORY_NOT_EMPTY} & {
        e.check_name for e in result.get_asset_check_evaluations()}
    assert sync.query("SELECT count(*) FROM raw_workday_workers") == [(len(workers),)]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks[c.WORKERS_NOT_EMPTIED] and checks[c.WORKERS_IDENTIFIED]
    # Columns neither mapped nor used (Job_Profile, Time_Type, ...) are listed for the administrator.
    [columns] = [e for e in result.get_asset_check_evaluations() if e.check_name == c.REPORT_COLUMNS_DECIDED]
    assert not columns.passed and "Job_Profile (" in columns.description and "Worker_Status" not in columns.description


def test_a_changed_report_is_applied_as_changes(hr_sync, workday, hr_directory):
    sync = hr_sync()
    assert sync.run("hr").success
    entries = workday.workday.entries
    active = next(w for w in entries if w["Worker_Status"] == "Active" and w.get("Email_Address"))
    active["Worker_Status"] = "Terminated"
    gone = entries.pop(next(i for i, w in enumerate(entries) if w["Worker_Status"] == "Active"
                            and w.get("Email_Address") and w is not active))
    result = sync.run("hr")
    assert result.success, failure_messages(result)
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected(entries)
    left = {r[0] for r in sync.query("SELECT contact_id FROM contact_changes WHERE change = 'left'")}
    assert left == {active["Email_Address"].lower(), gone["Email_Address"].lower()}
    [(added, updated, removed)] = sync.query(
        "SELECT added, updated, removed FROM sync_run_stages WHERE stage = 'raw_workday_workers' "
        "ORDER BY finished_at DESC LIMIT 1")
    assert (added, updated, removed) == (0, 1, 1)


@pytest.mark.parametrize("break_it, message, transient", [
    (lambda w: setattr(w.workday, "password", "changed"), "Workday answered with a sign-in page instead of the report",
     False),
    (lambda w: w.faults.add(500, path=REPORT, times=None), ": HTTP 500: ", True),
    (lambda w: w.faults.truncate_body(REPORT, after_bytes=30_000), "the connection broke after ", True),
    (lambda w: w.faults.rewrite(REPORT, lambda body: {"Report_Entry_Missing": []}), "the answer has no Report_Entry",
     False),
])
def test_each_broken_report_fails_cleanly_and_changes_nothing(hr_sync, workday, break_it, message, transient):
    sync = hr_sync()
    assert sync.run("hr").success
    before = sync.snapshot()
    password = workday.workday.password
    break_it(workday)
    try:
        result = sync.run("hr")
    finally:
        workday.workday.password = password
    assert not result.success
    [failure] = failure_messages(result)
    assert failure.startswith("dagster._core.definitions.events.Failure: integration 'hr': reading the Workday "
                              f"report failed: {workday.base_url}{REPORT}contoso_demo/lmcneil/Contacts_Sync")
    assert message in failure and PASSWORD not in failure
    assert sync.snapshot() == before


def test_an_emptied_report_is_blocked(hr_sync, workday):
    sync = hr_sync()
    assert sync.run("hr").success
    before = sync.snapshot()
    workday.workday.entries = []
    result = sync.run("hr")
    assert not result.success
    assert "the Workday report returned no workers; the last sync read " in failure_messages(result)[0]
    assert sync.snapshot() == before


def test_entra_and_workday_integrations_side_by_side(hr_sync, workday, emulator, directory, secret_env):
    sync = hr_sync(hr_integration(workday), integration("acme", emulator))
    entra, hr = sync.run("acme"), sync.run("hr")
    assert entra.success and hr.success, failure_messages(entra) + failure_messages(hr)
    # The Workday asset has no partition for the Entra integration, and each has only its own rows.
    assert "raw_workday_workers" not in {m.asset_key.path[-1] for m in entra.get_asset_materialization_events()}
    assert not {c.WORKERS_NOT_EMPTIED, c.WORKERS_IDENTIFIED} & {e.check_name for e in entra.get_asset_check_evaluations()}
    assert dict(sync.query("SELECT integration, count(*) FROM raw_workday_workers GROUP BY 1")) == {
        "hr": len(workday.workday.entries)}
    assert dict(sync.query("SELECT integration, count(*) FROM raw_graph_users GROUP BY 1")) == {
        "acme": len(directory.users)}


def test_generated_lists_one_per_supervisory_organization_kept_in_step(hr_sync, workday, hr_directory):
    lists = {"select": "none", "generated": [{"field": "Supervisory_Organization", "name": "Team {value}"}],
             "custom": [{"name": "Contractors", "when": {"field": "Worker_Type", "equals": "Contingent Worker"}}]}
    sync = hr_sync(hr_integration(workday, distribution_lists=lists))
    result = sync.run("hr")
    assert result.success, failure_messages(result)

    def expected_lists(workers):
        kept = expected(workers)
        teams: dict[str, set[str]] = {}
        for w in workers:
            if w["Employee_ID"] in kept and w.get("Supervisory_Organization"):
                teams.setdefault(f"Team {w['Supervisory_Organization']}", set()).add(kept[w["Employee_ID"]])
        teams["Contractors"] = {kept[w["Employee_ID"]] for w in workers
                                if w["Employee_ID"] in kept and w.get("Worker_Type") == "Contingent Worker"}
        return teams

    def actual_lists():
        rows = sync.query("SELECT l.display_name, m.contact_id FROM distribution_lists l LEFT JOIN "
                          "distribution_list_members m USING (integration, list_id)")
        result: dict[str, set[str]] = {}
        for name, contact in rows:
            result.setdefault(name, set()).update({contact} if contact else set())
        return result

    workers = workday.workday.entries
    assert actual_lists() == expected_lists(workers) and len(expected_lists(workers)) > 5
    assert {k for (k,) in sync.query("SELECT DISTINCT kind FROM distribution_lists")} == {"generated", "custom"}

    # Everyone of one organization moves to a new one: its list goes (reported), the new one comes.
    team = next(w["Supervisory_Organization"] for w in workers if w["Employee_ID"] in expected(workers))
    for w in workers:
        if w.get("Supervisory_Organization") == team:
            w["Supervisory_Organization"] = "Skunkworks - EMEA"
    result = sync.run("hr")
    assert result.success, failure_messages(result)
    assert actual_lists() == expected_lists(workers)
    assert f"Team {team}" not in actual_lists() and "Team Skunkworks - EMEA" in actual_lists()
    [removed] = [e for e in result.get_asset_check_evaluations() if e.check_name == c.NO_LIST_REMOVED]
    assert not removed.passed
    list_id = generated_list_id("Supervisory_Organization", team)
    assert sync.query("SELECT message FROM import_errors WHERE code = 'list_removed'") == [
        (f"list 'Team {team}' ({list_id}) was removed: no synced contact has its value any more (or its generated "
         "lists were removed from the configuration)",)]


def test_deletion_guard_and_preview_compare_with_the_last_committed_sync(hr_sync, workday, hr_directory):
    sync = hr_sync()
    assert sync.run("hr").success
    contacts = sync.snapshot()["contacts"]
    entries = workday.workday.entries
    kept = expected(entries)
    # A report that lost a third of its people (a changed prompt, say): previewed, then blocked.
    gone = {wid for i, wid in enumerate(sorted(kept)) if i % 3 == 0}
    workday.workday.entries = [w for w in entries if w["Employee_ID"] not in gone]
    preview = sync.run("hr", preview=True)
    assert preview.success
    assert sync.snapshot()["contacts"] == contacts
    assert {r[0] for r in sync.query("SELECT contact_id FROM sync_preview WHERE change = 'contact_left'")} == {
        kept[wid] for wid in gone}
    assert sync.query("SELECT json_extract_string(details, '$.check') FROM sync_preview "
                      "WHERE change = 'check_would_block'") == [(c.CONTACT_REMOVALS_WITHIN_LIMIT,),
                                                                 (c.DIRECTORY_REMOVALS_WITHIN_LIMIT,)]
    blocked = sync.run("hr")
    assert not blocked.success
    assert f"this sync would remove {len(gone):,} of {len(kept):,} contacts" in failure_messages(blocked)[0]
    assert sync.snapshot()["contacts"] == contacts
    # The operator approves: exactly those people leave.
    approved = sync.run("hr", ALLOW_REMOVALS)
    assert approved.success, failure_messages(approved)
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == {
        wid: cid for wid, cid in kept.items() if wid not in gone}


def test_oauth_refresh_sign_in_and_no_secret_anywhere(hr_sync, workday, hr_directory, monkeypatch, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("WD_TEST_CLIENT_SECRET", WORKDAY_CLIENT_SECRET)
    monkeypatch.setenv("WD_TEST_REFRESH_TOKEN", WORKDAY_REFRESH_TOKEN)
    entry = hr_integration(workday)
    entry["source"] = {**{k: v for k, v in entry["source"].items() if k not in ("username", "password_env")},
                       "auth": "oauth_refresh", "client_id": workday.workday.client_id,
                       "client_secret_env": "WD_TEST_CLIENT_SECRET", "refresh_token_env": "WD_TEST_REFRESH_TOKEN"}
    sync = hr_sync(entry)
    results = [sync.run("hr")]
    workday.expire_workday_tokens()
    results.append(sync.run("hr"))
    assert all(r.success for r in results), [failure_messages(r) for r in results]
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected(
        generate_workers(hr_directory, SEED))
    secrets = [PASSWORD, WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN, *workday.issued_credentials()]
    assert len(secrets) > 4
    for place, text in recorded_text(sync, results, caplog).items():
        for secret in secrets:
            assert secret not in text, place


def test_only_configured_columns_are_kept_and_odd_column_names_are_inert(hr_sync, workday, hr_directory):
    """A report may carry more than the sync needs (a birth date, a salary) and column names
    chosen by whoever edits the report: unused columns are not stored, odd names are only named."""
    hostile = "x', (SELECT 42), 'y"
    for n, w in enumerate(workday.workday.entries):
        w["Date_of_Birth"] = "1980-01-01"
        if n % 50 == 0:
            w[hostile] = "injected"
            w['quo"te'] = "q"
    sync = hr_sync(hr_integration(workday, mapping={"fields": {"Job_Profile": "skip"}}))
    result = sync.run("hr")
    assert result.success, failure_messages(result)
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected(
        generate_workers(hr_directory, SEED))
    stored = {k for (keys,) in sync.query("SELECT DISTINCT json_keys(data) FROM raw_workday_workers") for k in keys}
    imported = {k for (keys,) in sync.query("SELECT DISTINCT json_keys(imported) FROM contacts") for k in keys}
    for unwanted in ("Date_of_Birth", "Job_Profile", hostile, 'quo"te'):
        assert unwanted not in stored and unwanted not in imported
    assert "Worker_Status" in stored
    assert sync.query("SELECT count(*) FROM contacts WHERE imported::VARCHAR LIKE '%injected%'") == [(0,)]
    [columns] = [e for e in result.get_asset_check_evaluations() if e.check_name == c.REPORT_COLUMNS_DECIDED]
    assert "2 column names are not Workday aliases (letters, digits and _) and are ignored" in columns.description
    assert "Date_of_Birth (" in columns.description  # listed for the administrator, not stored


def test_a_column_a_rule_tests_gone_from_the_report_blocks(hr_sync, workday):
    sync = hr_sync()
    assert sync.run("hr").success
    before = sync.snapshot()
    for w in workday.workday.entries:
        w.pop("Worker_Status", None)
    result = sync.run("hr")
    assert not result.success
    assert ("no worker in the report carries Worker_Status, which the exclusion rules or lists test; add the "
            "column to the report (or check the integration user's permissions)") in failure_messages(result)[0]
    assert sync.snapshot() == before


def test_lists_follow_changed_workers_incrementally(hr_sync, workday):
    lists = {"custom": [{"name": "Contractors", "when": {"field": "Worker_Type", "equals": "Contingent Worker"}}]}
    sync = hr_sync(hr_integration(workday, distribution_lists=lists))
    assert sync.run("hr").success
    worker = next(w for w in workday.workday.entries if w["Worker_Status"] == "Active" and w.get("Email_Address")
                  and w.get("Worker_Type") == "Employee")
    worker["Worker_Type"] = "Contingent Worker"
    result = sync.run("hr")
    assert result.success, failure_messages(result)
    [lists_event] = [m for m in result.get_asset_materialization_events()
                     if m.asset_key.path[-1] == "distribution_lists"]
    assert lists_event.materialization.metadata["mode"].value == "incremental"
    members = {r[0] for r in sync.query("SELECT contact_id FROM distribution_list_members")}
    assert members == {w["Email_Address"].lower() for w in workday.workday.entries
                       if w.get("Worker_Type") == "Contingent Worker" and w["Employee_ID"] in expected(
                           workday.workday.entries)}
    assert worker["Email_Address"].lower() in members


def test_missing_columns_are_reported_only_when_the_configuration_names_them(hr_sync, workday):
    """A default-mapped column the report lacks is simply empty; a column the administrator mapped
    by hand and that the report lacks is worth a warning."""
    for w in workday.workday.entries:
        w.pop("Company", None)
        w.pop("Cost_Center", None)
    sync = hr_sync()
    result = sync.run("hr")
    assert result.success, failure_messages(result)
    [columns] = [e for e in result.get_asset_check_evaluations() if e.check_name == c.REPORT_COLUMNS_DECIDED]
    assert columns.description.split("columns the configuration names that no worker in the report carries: ")[1] \
        == "Cost_Center"
    assert sync.query("SELECT count(*) FROM contacts WHERE company IS NOT NULL OR cost_center IS NOT NULL") == [(0,)]


def test_full_resync_undoes_hand_edits_and_an_ordinary_sync_leaves_them(hr_sync, workday):
    lists = {"custom": [{"name": "Contractors", "when": {"field": "Worker_Type", "equals": "Contingent Worker"}}]}
    sync = hr_sync(hr_integration(workday, distribution_lists=lists))
    assert sync.run("hr").success
    before = sync.snapshot(content_only=True)
    [(list_id,)] = sync.query("SELECT list_id FROM distribution_lists")
    members = {r[0] for r in sync.query("SELECT contact_id FROM distribution_list_members")}
    victim, outsider = sorted(members)[0], sorted(set(expected(workday.workday.entries).values()) - members)[0]
    con = duckdb.connect(str(sync.warehouse))
    con.execute("UPDATE contacts SET cost_center = 'Hand Edited' WHERE contact_id = ?", [victim])
    con.execute("INSERT INTO distribution_list_members SELECT integration, list_id, ?, run_id, synced_at "
                "FROM distribution_list_members LIMIT 1", [outsider])
    con.close()

    # The report did not change: an ordinary sync rewrites nobody, the edits stay.
    assert sync.run("hr").success
    assert sync.query("SELECT cost_center FROM contacts WHERE contact_id = ?", [victim]) == [("Hand Edited",)]
    assert sync.query("SELECT count(*) FROM distribution_list_members WHERE contact_id = ?", [outsider]) == [(1,)]
    result = sync.run("hr", {"ops": {"raw_workday_workers": {"config": {"full_resync": True}}}})
    assert result.success, failure_messages(result)
    after = sync.snapshot(content_only=True)
    for table in ("mapped_contacts", "contacts", "excluded_contacts", "distribution_lists",
                  "distribution_list_members", "distribution_list_non_members"):
        assert after[table] == before[table], table
    assert sync.query("SELECT read_reason FROM sync_runs ORDER BY started_at DESC LIMIT 1") == [
        ("a Workday report is read whole; full resync asked for in the run config (full_resync: true)",)]
