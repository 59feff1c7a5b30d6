"""The merged contact directory (all_contacts) of an Entra ID integration and a Workday integration
that describe the same people, as the demo tenant's two integrations do: one emulator serves the
directory and the Workday report of one population. Real Dagster runs into a real DuckDB file.
Expected values come from the emulator's people, never from the pipeline."""

from __future__ import annotations

import json

import pytest

from entra_pipeline.emulator.workday_workers import generate_workers
from entra_pipeline.sync import checks as c

from tests.support.expected import expected_contacts, expected_mapped
from tests.support.integrations import WORKDAY_PASSWORD_ENV, integration, workday_integration, write_config
from tests.support.runs import Sync, failure_messages
from tests.support.tenant import WORKDAY_PASSWORD, WORKDAY_SEED

ENTRA, HR = "directory", "hr"
LEFT_OR_ON_LEAVE = ("Terminated", "On Leave")


@pytest.fixture
def people(hr_directory):
    """What each integration should keep and exclude, by contact id, and each person's record in each."""
    workers = generate_workers(hr_directory, WORKDAY_SEED)
    users = {u["mail"].strip().lower(): u for u in hr_directory.users if u["mail"]}
    by_mail = {w["Email_Address"].strip().lower(): w for w in workers if w.get("Email_Address")}
    entra_kept = set(expected_contacts(hr_directory).values())
    entra_excluded = set(expected_mapped(hr_directory).values()) - entra_kept
    hr_kept = {m for m, w in by_mail.items() if w["Worker_Status"] not in LEFT_OR_ON_LEAVE}
    return {"users": users, "workers": by_mail, "entra_kept": entra_kept, "entra_excluded": entra_excluded,
            "hr_kept": hr_kept, "hr_excluded": set(by_mail) - hr_kept}


@pytest.fixture
def merged(tmp_path, monkeypatch, workday, secret_env):
    """A sync of both integrations into one warehouse, with the given contacts_directory section."""
    monkeypatch.setenv(WORKDAY_PASSWORD_ENV, WORKDAY_PASSWORD)
    config, warehouse = tmp_path / "integrations.yaml", tmp_path / "warehouse.duckdb"

    def make(directory: dict | None = None, hr: dict | None = None) -> Sync:
        write_config(config, integration(ENTRA, workday), workday_integration(workday, **(hr or {})),
                     directory=directory)
        return Sync(config, warehouse)

    return make


def sync_both(sync: Sync, run_config: dict | None = None) -> None:
    for key in (ENTRA, HR):
        result = sync.run(key, run_config)
        assert result.success, failure_messages(result)


def row(sync: Sync, contact_id: str, *fields: str) -> dict:
    """Each field's (value, source) for one merged contact, and its integrations."""
    columns = ", ".join(f'CAST("{f}" AS VARCHAR)' for f in fields)
    found = sync.query(f"SELECT {columns}, sources, integrations FROM all_contacts WHERE contact_id = ?", [contact_id])
    assert len(found) == 1, contact_id
    values, sources, integrations = found[0][:-2], json.loads(found[0][-2]), found[0][-1]
    return {**{f: (v, sources.get(f)) for f, v in zip(fields, values)}, "integrations": integrations}


def kept_by_both(p) -> set[str]:
    return p["entra_kept"] & p["hr_kept"] - p["entra_excluded"] - p["hr_excluded"]


def differing_titles(p) -> list[str]:
    """People both integrations keep whose job titles differ, by contact id."""
    return sorted(m for m in kept_by_both(p)
                  if (p["users"][m]["jobTitle"] or "") != (p["workers"][m].get("Business_Title") or ""))


def people_with_same_title(p) -> list[str]:
    return sorted(m for m in kept_by_both(p) if p["users"][m]["jobTitle"]
                  and p["users"][m]["jobTitle"] == p["workers"][m].get("Business_Title"))


def test_each_person_is_one_contact_with_each_field_from_the_first_integration_of_its_precedence(merged, people):
    sync = merged()
    sync_both(sync)
    p = people
    everyone = (p["entra_kept"] | p["hr_kept"]) - p["entra_excluded"] - p["hr_excluded"]
    assert {r[0] for r in sync.query("SELECT contact_id FROM all_contacts")} == everyone
    assert sync.query("SELECT count(*) FROM all_contacts") == [(len(everyone),)]
    # People both keep are one row each, in both integrations.
    both = kept_by_both(p)
    assert len(both) > 200
    assert {r[0] for r in sync.query("SELECT contact_id FROM all_contacts WHERE integrations = ?",
                                     [[ENTRA, HR]])} == both
    assert {r[0] for r in sync.query("SELECT contact_id FROM all_contacts WHERE integrations = ?",
                                     [[HR]])} == p["hr_kept"] - p["entra_kept"] - p["entra_excluded"]

    # The default order is the file's: the directory first, Workday where the directory has nothing.
    person = differing_titles(p)[0]
    user, worker = p["users"][person], p["workers"][person]
    assert row(sync, person, "job_title", "department", "display_name", "country") == {
        "job_title": (user["jobTitle"], ENTRA), "department": (user["department"], ENTRA),
        "display_name": (user["displayName"], ENTRA), "country": (user["country"], ENTRA),
        "integrations": [ENTRA, HR]}
    # An empty value in the preferred integration does not hide the other's.
    no_id = next(m for m in sorted(both) if not p["users"][m]["employeeId"] and p["workers"][m].get("Employee_ID"))
    assert row(sync, no_id, "employee_id", "email") == {
        "employee_id": (p["workers"][no_id]["Employee_ID"], HR), "email": (no_id, ENTRA), "integrations": [ENTRA, HR]}
    # Someone only Workday has: every field from Workday; its custom field too.
    only_hr = sorted(p["hr_kept"] - p["entra_kept"] - p["entra_excluded"])[0]
    assert row(sync, only_hr, "job_title", "weekly_hours") == {
        "job_title": (p["workers"][only_hr]["Business_Title"], HR),
        "weekly_hours": (str(float(p["workers"][only_hr]["Standard_Hours"])), HR), "integrations": [HR]}

    # Excluded anywhere, excluded here: who one integration keeps and the other excludes, and why.
    kept_by_entra_only = sorted((p["entra_kept"] & p["hr_excluded"]))
    kept_by_hr_only = sorted((p["hr_kept"] & p["entra_excluded"]))
    assert kept_by_entra_only and kept_by_hr_only
    assert sync.query("SELECT contact_id, excluded_by, rule, kept_by FROM all_contacts_excluded ORDER BY 1, 2") == sorted(
        [(m, HR, "Left or on leave", [ENTRA]) for m in kept_by_entra_only]
        + [(m, ENTRA, sync.query("SELECT rule FROM excluded_contacts WHERE integration = ? AND contact_id = ?",
                                 [ENTRA, m])[0][0], [HR]) for m in kept_by_hr_only])
    # The history: the directory's sync brought everyone it keeps; Workday's added its own and
    # took out those it excludes.
    changes = dict(sync.query("SELECT merged_by || ' ' || change, count(*) FROM all_contact_changes GROUP BY 1"))
    assert changes[f"{ENTRA} joined"] == len(p["entra_kept"])
    assert changes[f"{HR} left"] == len(p["entra_kept"] & p["hr_excluded"])
    assert changes[f"{HR} joined"] == len(p["hr_kept"] - p["entra_kept"] - p["entra_excluded"])


def test_a_changed_precedence_shows_in_the_preview_and_the_next_sync_applies_it(merged, people):
    sync = merged()
    sync_both(sync)
    person = differing_titles(people)[0]
    user, worker = people["users"][person], people["workers"][person]
    before = sync.query("SELECT * FROM all_contacts ORDER BY contact_id")

    sync = merged({"precedence": {"fields": {"job_title": [HR, ENTRA]}}})
    preview = sync.run(HR, preview=True)
    assert preview.success, failure_messages(preview)
    assert sync.query("SELECT * FROM all_contacts ORDER BY contact_id") == before
    shown = {r[0]: json.loads(r[1]) for r in sync.query(
        "SELECT contact_id, details FROM sync_preview WHERE integration = ? AND change = 'directory_updated'", [HR])}
    # Everyone whose title Workday has now takes it from Workday: a new value, or the same value
    # from another source.
    assert set(shown) == {m for m in kept_by_both(people) if people["workers"][m].get("Business_Title")}
    assert len(differing_titles(people)) == 9
    assert shown[people_with_same_title(people)[0]]["fields"][0]["old_source"] == ENTRA
    assert shown[person] == {"fields": [{"field": "job_title", "old": user["jobTitle"], "new": worker["Business_Title"],
                                         "old_source": ENTRA, "new_source": HR}]}

    result = sync.run(HR)
    assert result.success, failure_messages(result)
    assert row(sync, person, "job_title", "department")  == {
        "job_title": (worker["Business_Title"], HR), "department": (user["department"], ENTRA),
        "integrations": [ENTRA, HR]}
    updated = {r[0]: json.loads(r[1]) for r in sync.query(
        "SELECT contact_id, changes FROM all_contact_changes WHERE merged_by = ? AND change = 'updated' "
        "AND run_id = ?", [HR, result.run_id])}
    assert updated == {m: v["fields"] for m, v in shown.items()}


def test_with_excluded_anywhere_off_a_person_one_integration_keeps_stays_with_its_values(merged, people):
    sync = merged({"excluded_anywhere": False})
    sync_both(sync)
    p = people
    assert {r[0] for r in sync.query("SELECT contact_id FROM all_contacts")} == p["entra_kept"] | p["hr_kept"]
    assert sync.query("SELECT count(*) FROM all_contacts_excluded") == [(0,)]
    on_leave_in_hr = sorted(p["entra_kept"] & p["hr_excluded"])[0]
    assert row(sync, on_leave_in_hr, "job_title") == {
        "job_title": (p["users"][on_leave_in_hr]["jobTitle"], ENTRA), "integrations": [ENTRA]}


def test_the_deletion_guard_stops_a_merge_that_removes_too_many_people(merged, people):
    guard = {"deletion_guard": {"max_removed": 5, "max_removed_percent": None}}
    sync = merged({"excluded_anywhere": False}, hr=guard)
    sync_both(sync)
    before = sync.query("SELECT * FROM all_contacts ORDER BY contact_id")
    # Turning excluded_anywhere on removes from the merged directory only, no integration's contacts.
    sync = merged({"excluded_anywhere": True}, hr=guard)
    blocked = sync.run(HR)
    assert not blocked.success
    leaving = (people["entra_kept"] & people["hr_excluded"]) | (people["hr_kept"] & people["entra_excluded"])
    removed = len(leaving)
    assert removed > 5
    # Their memberships of the merged lists go with them, weighed by the same guard.
    memberships = sum(n for cid, n in sync.query(
        "SELECT contact_id, count(*) FROM distribution_list_members GROUP BY contact_id") if cid in leaving)
    total = sync.query("SELECT count(*) FROM distribution_list_members")[0][0]
    assert [e.description for e in blocked.get_asset_check_evaluations()
            if e.check_name == c.DIRECTORY_REMOVALS_WITHIN_LIMIT] == [
        f"this sync would remove {removed:,} of {len(before):,} people of the merged directory (more than 5); "
        "re-run with allow_removals: true to approve"]
    assert [e.description for e in blocked.get_asset_check_evaluations()
            if e.check_name == c.DIRECTORY_MEMBERSHIPS_WITHIN_LIMIT] == [
        f"this sync would remove {memberships:,} of {total:,} list memberships of the merged directory (more than "
        "5); re-run with allow_removals: true to approve"]
    assert sync.query("SELECT * FROM all_contacts ORDER BY contact_id") == before

    approved = sync.run(HR, {"ops": {"all_contacts": {"config": {"allow_removals": True}}}})
    assert approved.success, failure_messages(approved)
    assert sync.query("SELECT count(*) FROM all_contacts") == [(len(before) - removed,)]
    assert sync.query("SELECT removed, list_members_removed FROM sync_run_stages WHERE stage = 'all_contacts' "
                      "AND run_id = ?", [approved.run_id]) == [(removed, memberships)]
    assert sync.query("SELECT directory_left, directory_list_members_removed FROM sync_runs WHERE run_id = ?",
                      [approved.run_id]) == [(removed, memberships)]


def test_an_integration_removed_from_the_file_takes_only_its_own_people_out(merged, people, workday):
    sync = merged()
    sync_both(sync)
    # The file now names the directory only (hr's rows stay until deleted: not an orphan's people).
    write_config(sync.config, integration(ENTRA, workday))
    result = sync.run(ENTRA, {"ops": {"all_contacts": {"config": {"allow_removals": True}}}})
    assert result.success, failure_messages(result)
    assert {r[0] for r in sync.query("SELECT contact_id FROM all_contacts")} == people["entra_kept"]
    assert sync.query("SELECT DISTINCT integrations FROM all_contacts") == [([ENTRA],)]


@pytest.fixture
def changing(tmp_path, monkeypatch, secret_env):
    """A directory and Workday tenant of its own (the test changes them), both integrations on it."""
    from entra_pipeline.emulator.population import generate_directory
    from entra_pipeline.emulator.workday import WorkdayTenant

    from tests.support.tenant import WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN, running_emulator

    directory = generate_directory(users=400, groups=20, seed=WORKDAY_SEED)
    hr = WorkdayTenant(password=WORKDAY_PASSWORD, client_secret=WORKDAY_CLIENT_SECRET,
                       refresh_token=WORKDAY_REFRESH_TOKEN, entries=generate_workers(directory, WORKDAY_SEED))
    monkeypatch.setenv(WORKDAY_PASSWORD_ENV, WORKDAY_PASSWORD)
    with running_emulator(directory, tmp_path / "certs", workday=hr) as server:
        config = write_config(tmp_path / "integrations.yaml", integration(ENTRA, server), workday_integration(server))
        yield server, Sync(config, tmp_path / "warehouse.duckdb")


def step_metadata(result, step: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == step]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def merged_rows(sync: Sync) -> list[tuple]:
    return sync.query("SELECT COLUMNS(lambda c: c NOT IN ('run_id', 'synced_at')) FROM all_contacts ORDER BY contact_id")


def test_an_incremental_sync_merges_only_the_people_it_changed_and_equals_a_fresh_merge(changing, tmp_path, people):
    server, sync = changing
    sync_both(sync)
    # Workday's first sync added its custom fields to the contact tables: a new field merges everyone once.
    assert step_metadata(sync.run(ENTRA), "all_contacts")["mode"] == "full"
    p = people
    both = sorted(kept_by_both(p))
    moved, on_leave, terminated = both[0], both[1], both[2]
    only_hr = sorted(p["hr_kept"] - p["entra_kept"] - p["entra_excluded"])[0]
    server.update_user(p["users"][moved]["id"], {"jobTitle": "Chief Merger"})
    server.update_user(p["users"][on_leave]["id"],
                       {"onPremisesExtensionAttributes": {"extensionAttribute1": "Inactive"}})
    # A new directory account for someone only Workday had, excluded from the start: never a contact here.
    server.add_user({"id": "00000000-0000-4000-8000-00000000a11c", "userPrincipalName": "new.account@contoso.com",
                     "mail": only_hr, "displayName": "New Account",
                     "onPremisesExtensionAttributes": {"extensionAttribute1": "Inactive"}})

    result = sync.run(ENTRA)
    assert result.success, failure_messages(result)
    merged = step_metadata(result, "all_contacts")
    assert (merged["mode"], merged["people_recomputed"], merged["people_updated"], merged["people_left"]) == (
        "incremental", 3, 1, 2)
    assert row(sync, moved, "job_title")["job_title"] == ("Chief Merger", ENTRA)
    assert sync.query("SELECT contact_id, excluded_by, rule, kept_by FROM all_contacts_excluded "
                      "WHERE contact_id IN (?, ?) ORDER BY 1", [on_leave, only_hr]) == sorted(
        [(on_leave, ENTRA, "On leave", [HR]), (only_hr, ENTRA, "On leave", [HR])])

    # Workday terminates someone both keep: out of the merged directory at Workday's next sync.
    worker = next(w for w in server.workday.entries if w.get("Email_Address", "").strip().lower() == terminated)
    worker["Worker_Status"] = "Terminated"
    result = sync.run(HR)
    assert result.success, failure_messages(result)
    assert step_metadata(result, "all_contacts")["mode"] == "incremental"
    assert sync.query("SELECT count(*) FROM all_contacts WHERE contact_id = ?", [terminated]) == [(0,)]

    # The same directory and report synced from nothing merge to exactly the same rows.
    fresh = Sync(sync.config, tmp_path / "fresh.duckdb")
    sync_both(fresh)
    assert merged_rows(sync) == merged_rows(fresh)
    assert sorted(sync.query("SELECT contact_id, excluded_by, rule, kept_by FROM all_contacts_excluded")) == sorted(
        fresh.query("SELECT contact_id, excluded_by, rule, kept_by FROM all_contacts_excluded"))

    # Back from leave: back in the merged directory, again incrementally.
    server.update_user(p["users"][on_leave]["id"], {"onPremisesExtensionAttributes": {"extensionAttribute1": "Active"}})
    result = sync.run(ENTRA)
    assert step_metadata(result, "all_contacts")["mode"] == "incremental"
    assert row(sync, on_leave, "email")["integrations"] == [ENTRA, HR]
