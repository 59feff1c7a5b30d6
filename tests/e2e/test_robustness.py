"""Robustness of the sync, over real HTTPS to the emulator, into real DuckDB files, in real Dagster
runs: a stage that fails half-way through its write rolls back, secrets never reach the run log or
the warehouse, tokens are renewed once, cut-short and vanished member lists, list selection by id,
duplicate Unique Contact IDs, configuration changed after the raw read, directory extensions,
values of the wrong type, capped Retry-After, schedule status and `check-config`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from entra_pipeline.definitions import ENTRA_SOURCES_JOB, SYNC_JOB, build_defs
from entra_pipeline.sync import checks as c

from tests.support.expected import (
    excluded_by_rule, expected_contacts, expected_mapped, expected_members, offered_group_ids)
from tests.support.integrations import ALLOW_REMOVALS, integration, write_config
from tests.support.runs import check_evaluations, check_outcomes, failure_messages, materialized, step_metadata
from tests.support.tenant import SECRET, SECRET_ENV


ROOT = Path(__file__).resolve().parents[2]
USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def members_by_list(sync) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {}
    for list_id, contact_id in sync.query("SELECT list_id, contact_id FROM distribution_list_members"):
        members.setdefault(list_id, set()).add(contact_id)
    return members


# -- 1. a failure in the middle of a stage's write ----------------------------------------------

def test_failure_mid_write_rolls_the_whole_stage_back(first_sync, emulator, directory, monkeypatch):
    from entra_pipeline.warehouse import contact_tables

    before, content_before = first_sync.snapshot(), first_sync.snapshot(content_only=True)
    # Without the guests switch the contacts would change: guests with a mailbox, enabled and not on
    # leave would become contacts.
    rules = {**integration("acme", emulator)["exclusions"], "guests": False}
    write_config(first_sync.config, integration("acme", emulator, exclusions=rules))
    without_guest_rule = {uid: cid for uid, cid in expected_mapped(directory).items()
                          if uid not in excluded_by_rule(directory, guests_rule=False)}
    assert set(without_guest_rule) - set(expected_contacts(directory)), "guests should be waiting to join"

    calls = []

    def broken_write_exclusions(con, *args, **kwargs):
        # By now write_contacts has deleted and re-inserted this integration's contacts in the
        # same transaction: prove it, then fail.
        calls.append(dict(con.execute("SELECT source_id, contact_id FROM contacts WHERE integration = 'acme'")
                          .fetchall()))
        raise RuntimeError("disk full while writing excluded_contacts")

    with monkeypatch.context() as patch:
        patch.setattr(contact_tables, "write_exclusions", broken_write_exclusions)
        result = first_sync.run("acme")

    assert not result.success
    assert calls == [without_guest_rule]  # the new contacts were written, uncommitted
    [message] = failure_messages(result)
    assert 'Error occurred while executing op "filtered_contacts"' in message
    assert message.endswith(" | RuntimeError: disk full while writing excluded_contacts\n")
    assert materialized(result) == {"raw_graph_users", "raw_graph_groups", "mapped_contacts"}
    after = first_sync.snapshot()
    for table in ("contacts", "excluded_contacts", "distribution_list_members", "distribution_lists"):
        assert after[table] == before[table], table
    first_sync.unchanged_except(before, after, {"raw_graph_users", "raw_graph_groups", "raw_graph_group_members",
                                                "mapped_contacts", "import_errors", "directory_fields_read"})
    assert first_sync.snapshot(content_only=True) == content_before

    # The same configuration without the fault does change the contacts: the rollback was real.
    result = first_sync.run("acme")
    assert result.success, failure_messages(result)
    assert dict(first_sync.query("SELECT source_id, contact_id FROM contacts")) == without_guest_rule


# -- 2. secret hygiene -----------------------------------------------------------------------------

def test_secrets_reach_neither_the_run_log_nor_the_warehouse(make_sync, emulator, monkeypatch):
    sync = make_sync(integration("acme", emulator))
    good = sync.run("acme")
    assert good.success, failure_messages(good)
    wrong = "WRONG-s3cr3t-4f1d2c-should-never-appear"
    monkeypatch.setenv(SECRET_ENV, wrong)
    bad = sync.run("acme")
    assert not bad.success
    assert all("invalid_client: AADSTS7000215" in m for m in failure_messages(bad))

    for result in (good, bad):
        assert len(sync.instance.all_logs(result.run_id)) > 20
        for run_id in result.run_ids:
            for event in sync.instance.all_logs(run_id):
                for text in (dg.serialize_value(event), repr(event)):
                    assert SECRET not in text and wrong not in text, text[:300]
            run = sync.instance.get_run_by_id(run_id)
            assert SECRET not in dg.serialize_value(run) and wrong not in dg.serialize_value(run)
    tables = sync.snapshot()
    assert tables["contacts"] and tables["import_errors"]  # there is something to scan
    for table, rows in tables.items():
        for row in rows:
            assert SECRET not in row and wrong not in row, table


# -- 3. token renewal --------------------------------------------------------------------------

EXPIRED = {"error": {"code": "InvalidAuthenticationToken",
                     "message": "Lifetime validation failed, the token is expired."}}


def test_a_rejected_token_is_renewed_once(make_sync, emulator, directory):
    sync = make_sync(integration("acme", emulator))
    fault = emulator.faults.add(401, path="/v1.0/users/delta", times=1, body=EXPIRED)
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert fault.hits == 1
    meta = step_metadata(result, "raw_graph_users")
    assert meta["graph_token_requests"] == 2
    assert meta["graph_requests"] == meta["delta_pages"] + 1  # every page, and the one refused
    assert meta["graph_retries"] == 0
    assert step_metadata(result, "raw_graph_groups")["graph_token_requests"] == 1
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


def test_a_token_rejected_twice_fails_naming_the_request(make_sync, emulator):
    sync = make_sync(integration("acme", emulator))
    emulator.faults.add(401, path="/v1.0/users/delta", times=2, body=EXPIRED)
    result = sync.run("acme")
    assert not result.success
    [message] = failure_messages(result)
    assert re.search(
        r"integration 'acme': reading users failed: GET /v1\.0/users/delta: HTTP 401 InvalidAuthenticationToken: "
        rf"Lifetime validation failed, the token is expired\. \(request-id {REQUEST_ID}\)", message), message
    assert materialized(result) == {"raw_graph_groups"}
    assert sync.query("SELECT count(*) FROM raw_graph_users") == [(0,)]


# -- 4. a member list cut short ----------------------------------------------------------------

def test_member_list_cut_short_blocks_the_groups(make_sync, emulator, directory):
    first_sync = make_sync(integration("acme", emulator, source={"read": "list"}))
    assert first_sync.run("acme").success
    before = first_sync.snapshot()
    group_id = directory.special["all_employees"]
    direct = len(directory.members[group_id])
    assert direct > 999
    emulator.faults.truncate_paging(f"/v1.0/groups/{group_id}/members")
    result = first_sync.run("acme")
    assert not result.success
    evaluation = check_evaluations(result)[c.RAW_GROUPS_COMPLETE]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description == (f"paging stopped early: group {group_id}: read 999 members but Graph "
                                      f"counted {direct:,}")
    [message] = failure_messages(result)
    assert (f"integration 'acme': paging stopped early: group {group_id}: read 999 members but Graph counted "
            f"{direct:,}; nothing was written") in message
    # The users' side of the sync is independent of groups and completes; lists do not run.
    assert materialized(result) == {"raw_graph_users", "mapped_contacts", "filtered_contacts", "all_contacts"}
    after = first_sync.snapshot()
    for table in ("raw_graph_groups", "raw_graph_group_members", "distribution_lists", "distribution_list_members"):
        assert after[table] == before[table], table


# -- 5. a group deleted between /groups and /members --------------------------------------------

def test_group_deleted_while_reading_is_left_out_and_said(make_sync, emulator, directory):
    nested = {oid for members in directory.members.values() for t, oid in members if t == GROUP_TYPE}
    special = set()
    for value in directory.special.values():
        special.update([value] if isinstance(value, str) else value)
    contacts = expected_contacts(directory)
    # A mail-enabled group with contacts that no other group contains, so no other list changes.
    vanished = sorted(g["id"] for g in directory.groups if g["mailEnabled"] and g["id"] not in nested
                      and g["id"] not in special and expected_members(directory, g["id"], contacts))[0]
    name = directory.group_by_id(vanished)["displayName"]
    sync = make_sync(integration("acme", emulator, source={"read": "list"}))
    fault = emulator.faults.add(404, path=f"/v1.0/groups/{vanished}/members", times=1)
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert fault.hits == 1
    assert check_outcomes(result)[c.RAW_GROUPS_COMPLETE] is True
    meta = step_metadata(result, "raw_graph_groups")
    assert (meta["groups"], meta["groups_vanished"]) == (len(directory.groups) - 1, 1)

    all_ids = {g["id"] for g in directory.groups}
    assert {r[0] for r in sync.query("SELECT id FROM raw_graph_groups")} == all_ids - {vanished}
    assert sync.query("SELECT count(*) FROM raw_graph_group_members WHERE group_id = ?", [vanished]) == [(0,)]
    assert sync.query("SELECT stage, code, record, field, message FROM import_errors "
                      "WHERE stage <> 'mapped_contacts'") == [
        ("raw_graph_groups", "group_vanished", vanished, None,
         f"group {name!r} was deleted while the sync read it; left out")]
    lists = {r[0] for r in sync.query("SELECT list_id FROM distribution_lists")}
    assert lists == offered_group_ids(directory) - {vanished}
    members = members_by_list(sync)
    for list_id in lists:
        assert members.get(list_id, set()) == expected_members(directory, list_id, contacts), list_id
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == contacts


# -- 6. lists selected by id ---------------------------------------------------------------------

def test_lists_selected_by_id(make_sync, emulator, directory):
    parent, everyone = directory.special["nested_parent"], directory.special["all_employees"]
    security = sorted(g["id"] for g in directory.groups if not g["mailEnabled"])[0]
    security_name = directory.group_by_id(security)["displayName"]
    sync = make_sync(integration("acme", emulator, distribution_lists={
        "select": "ids", "ids": [parent, everyone, security, "no-such-id"]}))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    evaluation = check_evaluations(result)[c.SELECTED_LISTS_RESOLVED]
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert evaluation.description == "2 selected lists not resolved"

    contacts = expected_contacts(directory)
    lists = {r[0]: r[1:] for r in sync.query("SELECT list_id, kind, member_count FROM distribution_lists")}
    assert set(lists) == {parent, everyone}
    members = members_by_list(sync)
    for list_id in (parent, everyone):
        expected = expected_members(directory, list_id, contacts)
        assert members[list_id] == expected, list_id
        assert lists[list_id][1] == len(expected)
    assert (lists[parent][0], lists[everyone][0]) == ("distribution", "microsoft365")
    # The parent's members come through its nested security groups, too.
    assert members[parent] != {contacts[oid] for t, oid in directory.members[parent]
                               if t == USER_TYPE and oid in contacts}
    assert sync.query("SELECT record, field, code, message FROM import_errors WHERE stage = 'distribution_lists' "
                      "ORDER BY code") == [
        ("no-such-id", "distribution_lists.ids", "list_not_found",
         "selected group id 'no-such-id' is not in the directory"),
        (security, "distribution_lists.ids", "list_not_mail_enabled",
         f"group {security_name!r} ({security}) is a plain security group and cannot be a distribution list"),
    ]


# -- 7. duplicate Unique Contact IDs ------------------------------------------------------------

def test_duplicate_unique_contact_ids_prefer_enabled_members_then_the_smallest_id(make_sync, emulator, directory):
    by_value: dict[str, list[str]] = {}
    for user in directory.users:
        value = (user["department"] or "").strip()
        if value:
            by_value.setdefault(value, []).append(user["id"])
    no_department = {u["id"] for u in directory.users if not (u["department"] or "").strip()}
    users = {u["id"]: u for u in directory.users}

    def preference(uid: str) -> tuple:
        return (users[uid]["accountEnabled"] is False, users[uid]["userType"] == "Guest", uid)

    by_value = {value: sorted(ids, key=preference) for value, ids in by_value.items()}
    kept = {ids[0]: value for value, ids in by_value.items()}
    assert any(len(ids) > 1 for ids in by_value.values()) and no_department

    sync = make_sync(integration("acme", emulator, mapping={"unique_id": "department"},
                                         exclusions={"disabled_accounts": False, "guests": False}))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    evaluations = check_evaluations(result)
    duplicate = evaluations[c.UNIQUE_CONTACT_IDS_DISTINCT]
    assert (duplicate.passed, duplicate.severity) == (False, dg.AssetCheckSeverity.WARN)
    shared = {value: ids for value, ids in by_value.items() if len(ids) > 1}
    n_duplicates = sum(len(ids) for ids in shared.values())
    assert duplicate.description == f"{n_duplicates:,} users sharing a Unique Contact ID"
    assert check_outcomes(result) == {
        c.RAW_USERS_COMPLETE: True, c.RAW_GROUPS_COMPLETE: True, c.DIRECTORY_USERS_MAPPED: True,
        c.CONTACTS_HAVE_UNIQUE_ID: False, c.UNIQUE_CONTACT_IDS_DISTINCT: False, c.CONTACT_VALUES_VALID: True,
        c.EXCLUSIONS_KEEP_CONTACTS: True, c.SELECTED_LISTS_RESOLVED: True, c.EXTENSION_ATTRIBUTES_DECIDED: False,
        c.NO_LIST_REMOVED: True, c.DIRECTORY_NOT_EMPTY: True, c.CONTACT_REMOVALS_WITHIN_LIMIT: True,
        c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT: True, c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT: True, c.NO_ORPHANED_DATA: True,
        c.CERTIFICATE_NOT_EXPIRING: True, c.DIRECTORY_REMOVALS_WITHIN_LIMIT: True,
        c.DIRECTORY_MEMBERSHIPS_WITHIN_LIMIT: True,
        c.DIRECTORY_VALUES_FIT: True}

    assert dict(sync.query("SELECT source_id, contact_id FROM mapped_contacts")) == kept
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == kept
    def listed(ids: list[str]) -> str:
        return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    expected_errors = {
        (uid, "department", f"{len(ids)} users share Unique Contact ID {value!r} ({listed(ids)}); "
                            f"kept {ids[0]} (enabled members first, then the smallest object id)")
        for value, ids in shared.items() for uid in ids}
    rows = sync.query("SELECT record, field, message FROM import_errors WHERE code = 'duplicate_unique_id'")
    assert len(rows) == n_duplicates
    assert set(rows) == expected_errors
    missing = {r[0] for r in sync.query("SELECT record FROM import_errors WHERE code = 'missing_unique_id'")}
    assert missing == no_department
    # Lists hold the kept user's contact; the other users sharing the ID are not contacts.
    members = members_by_list(sync)
    for list_id in offered_group_ids(directory):
        assert members.get(list_id, set()) == expected_members(directory, list_id, kept), list_id


# -- 8. configuration changed after the raw read --------------------------------------------------

def test_exclusion_on_a_field_not_read_yet_asks_for_a_new_raw_read(first_sync, emulator, directory):
    ext = directory.extension_property
    before = first_sync.snapshot()
    rules = {"rules": integration("acme", emulator)["exclusions"]["rules"] + [
        {"name": "No cost center", "field": ext, "is_empty": True}]}
    write_config(first_sync.config, integration("acme", emulator, exclusions=rules))

    def run_only(*assets: str) -> dg.ExecuteInProcessResult:
        defs = build_defs(first_sync.config, first_sync.warehouse)
        return defs.resolve_job_def(SYNC_JOB).execute_in_process(
            partition_key="acme", instance=first_sync.instance, raise_on_error=False,
            asset_selection=[dg.AssetKey(name) for name in assets])

    result = run_only("mapped_contacts", "filtered_contacts")
    assert not result.success
    [message] = failure_messages(result)
    assert (f"integration 'acme': the mapping and exclusions use directory fields that the last raw_graph_users "
            f"did not read ({ext}); materialize raw_graph_users again") in message
    assert materialized(result) == set()
    assert first_sync.snapshot() == before
    # The exclusions alone, on contacts mapped before the change, are refused the same way.
    result = run_only("filtered_contacts")
    assert not result.success
    [message] = failure_messages(result)
    assert (f"integration 'acme': the mapping and exclusions use directory fields that the last mapped_contacts "
            f"did not read ({ext}); materialize raw_graph_users and mapped_contacts again") in message
    assert first_sync.snapshot() == before

    # The new rule removes a fifth of the contacts: the deletion guard stops it until approved.
    no_cost_center = {u["id"] for u in directory.users if u[ext] in (None, "")}
    removed = len(set(expected_contacts(directory)) & no_cost_center)
    result = first_sync.run("acme")
    assert not result.success
    assert any(f"this sync would remove {removed:,} of {len(expected_contacts(directory)):,} contacts" in m
               for m in failure_messages(result))
    assert first_sync.snapshot()["contacts"] == before["contacts"]
    result = first_sync.run("acme", ALLOW_REMOVALS)
    assert result.success, failure_messages(result)
    contacts = expected_contacts(directory)
    assert set(contacts) & no_cost_center and set(contacts) - no_cost_center
    assert dict(first_sync.query("SELECT source_id, contact_id FROM contacts")) == \
        {uid: cid for uid, cid in contacts.items() if uid not in no_cost_center}
    excluded = dict(first_sync.query("SELECT source_id, rule FROM excluded_contacts"))
    assert {uid for uid, rule in excluded.items() if rule == "No cost center"} == set(contacts) & no_cost_center
    assert {uid: rule for uid, rule in excluded.items() if rule != "No cost center"} == excluded_by_rule(directory)


# -- 9. a directory extension mapped to a contact field ----------------------------------------------

def test_directory_extension_maps_to_a_contact_field(make_sync, emulator, directory):
    ext = directory.extension_property
    sync = make_sync(integration("acme", emulator, mapping={"fields": {ext: "department"}}))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert ext in step_metadata(result, "raw_graph_users")["selected_properties"].split(", ")
    contacts = expected_contacts(directory)
    got = dict(sync.query("SELECT source_id, department FROM contacts"))
    assert got == {uid: directory.user_by_id(uid)[ext] for uid in contacts}
    assert any(v is None for v in got.values()) and any(v is not None for v in got.values())
    imported = {r[0]: json.loads(r[1]).get(ext) for r in sync.query("SELECT source_id, imported FROM contacts")}
    assert imported == got


# -- 10. a text attribute mapped to the boolean contact field -------------------------------------

def test_text_mapped_to_the_boolean_field_is_an_invalid_value(make_sync, emulator, directory):
    sync = make_sync(integration("acme", emulator, mapping={"fields": {"userType": "account_enabled"}}))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    evaluation = check_evaluations(result)[c.CONTACT_VALUES_VALID]
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    mapped_users = [u for u in directory.users if u["id"] in expected_mapped(directory)]
    assert evaluation.description == f"{len(mapped_users):,} values that do not fit their field"

    rows = sync.query("SELECT record, field, message FROM import_errors WHERE code = 'invalid_value'")
    # Every directory user has a userType; only those who become contacts are reported (the others
    # already have a missing_unique_id error).
    assert set(rows) == {
        (u["id"], "account_enabled",
         f"contact {u['mail'].lower()}: account_enabled (Boolean) cannot take {u['userType']!r} from userType: "
         "takes true or false; left empty") for u in mapped_users}
    assert len(rows) == len(mapped_users) < len(directory.users)
    for table in ("mapped_contacts", "contacts"):
        assert sync.query(f"SELECT count(*) FROM {table} WHERE account_enabled IS NOT NULL") == [(0,)]
    assert dict(sync.query("SELECT source_id, contact_id FROM mapped_contacts")) == expected_mapped(directory)
    # The built-in "Disabled account" rule tests the directory field accountEnabled, which is still read
    # (and kept in `imported`), not the contact field: disabled users are still excluded.
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)
    assert dict(sync.query("SELECT source_id, rule FROM excluded_contacts")) == excluded_by_rule(directory)


# -- 11. Retry-After is capped -----------------------------------------------------------------

def test_retry_after_is_capped_by_configuration(make_sync, emulator, directory):
    sync = make_sync(integration("acme", emulator, source={"max_retry_after_seconds": 1}))
    fault = emulator.faults.add(429, path="/v1.0/users", times=1, retry_after=30)
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert fault.hits == 1
    meta = step_metadata(result, "raw_graph_users")
    assert (meta["graph_retries"], meta["graph_throttled"]) == (1, 1)
    assert 1.0 <= meta["graph_seconds"] < 10
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


# -- 12. schedules ------------------------------------------------------------------------------

def test_disabled_schedule_starts_stopped(tmp_path, emulator):
    config = write_config(tmp_path / "integrations.yaml",
                          integration("on", emulator, schedule={"cron": "15 5 * * 1-5", "timezone": "Europe/Berlin"}),
                          integration("off", emulator, schedule={"cron": "0 6 * * *", "enabled": False}))
    defs = build_defs(config, tmp_path / "warehouse.duckdb")
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"sync_on", "sync_off"}
    assert schedules["sync_on"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedules["sync_off"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert (schedules["sync_on"].cron_schedule, schedules["sync_on"].execution_timezone) == \
        ("15 5 * * 1-5", "Europe/Berlin")
    assert (schedules["sync_off"].cron_schedule, schedules["sync_off"].execution_timezone) == ("0 6 * * *", "UTC")
    # A schedule starts its integration's source job; the contacts job follows it (sensor).
    assert schedules["sync_off"].job_name == ENTRA_SOURCES_JOB


# -- 13. check-config ----------------------------------------------------------------------------

def test_check_config_names_the_unset_secret_variable(tmp_path, emulator):
    unset = "ENTRA_TEST_SECRET_NOBODY_SET"
    config = write_config(tmp_path / "integrations.yaml", integration("ready", emulator),
                          integration("unready", emulator, source={"client_secret_env": unset}))
    env = {**os.environ, "ENTRA_PIPELINE_CONFIG": str(config), SECRET_ENV: SECRET}
    env.pop(unset, None)
    proc = subprocess.run([sys.executable, "-m", "entra_pipeline", "check-config"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    base = emulator.base_url.rstrip("/")
    assert proc.stdout.splitlines() == [
        f"ready: Test ready [{base}; cron '0 6 * * *'] secret set",
        f"unready: Test unready [{base}; cron '0 6 * * *'] integration 'unready': environment variable "
        f"{unset} (source.client_secret_env) is not set",
    ]
    assert SECRET not in proc.stdout + proc.stderr


def test_a_token_that_expires_during_long_retries_is_renewed_again(make_sync, emulator, directory):
    # One request outlives two tokens: throttled (Retry-After 6 s), its token expired, renewed;
    # throttled again, the new token expired too, renewed again; then it is answered.
    sync = make_sync(integration("acme", emulator, source={"max_retry_after_seconds": 10}))
    faults = []
    for _ in range(2):
        faults.append(emulator.faults.add(429, path="/v1.0/users/delta", times=1, retry_after=6))
        faults.append(emulator.faults.add(401, path="/v1.0/users/delta", times=1, body=EXPIRED))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert [f.hits for f in faults] == [1, 1, 1, 1]
    meta = step_metadata(result, "raw_graph_users")
    assert meta["graph_token_requests"] == 3  # the first token and two renewals
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)
