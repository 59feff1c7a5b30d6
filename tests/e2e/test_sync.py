"""End to end: the real sync job over real HTTPS against the emulator, into a real DuckDB file."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from entra_pipeline.cli import QUIET
from entra_pipeline.definitions import build_defs
from entra_pipeline.defs.jobs import ENTRA_SOURCES_JOB
from entra_pipeline.sync import checks as c

from tests.support.expected import expected_contacts, expected_mapped, expected_members, offered_group_ids
from tests.support.integrations import integration, write_config
from tests.support.runs import Sync, check_outcomes, failure_messages, materialized, step_metadata
from tests.support.tenant import SECRET, SECRET_ENV


ASSETS = ["raw_graph_users", "raw_graph_groups", "mapped_contacts", "filtered_contacts", "distribution_lists",
          "all_contacts"]


@pytest.fixture(scope="module")
def synced(directory, emulator, tmp_path_factory):
    """One full sync of the default test integration, shared by the read-only assertions below."""
    tmp = tmp_path_factory.mktemp("full")
    config = write_config(tmp / "integrations.yaml", integration("acme", emulator))
    sync = Sync(config, tmp / "warehouse.duckdb")
    mp = pytest.MonkeyPatch()
    mp.setenv(SECRET_ENV, SECRET)
    try:
        before = emulator.request_count
        result = sync.run("acme")
        requests = emulator.request_count - before
    finally:
        mp.undo()
    assert result.success, failure_messages(result)
    return sync, result, requests


def test_every_asset_materializes_and_checks_report_the_demo_problems(synced):
    _, result, _ = synced
    assert materialized(result) == set(ASSETS)
    assert check_outcomes(result) == {
        c.RAW_USERS_COMPLETE: True,
        c.RAW_GROUPS_COMPLETE: True,
        c.DIRECTORY_USERS_MAPPED: True,
        c.EXCLUSIONS_KEEP_CONTACTS: True,
        # The directory has users without mail: a WARN, not a failure of the run.
        c.CONTACTS_HAVE_UNIQUE_ID: False,
        c.UNIQUE_CONTACT_IDS_DISTINCT: True,
        c.CONTACT_VALUES_VALID: True,
        # The test integration decides none of the 15 extension attributes.
        c.EXTENSION_ATTRIBUTES_DECIDED: False,
        c.SELECTED_LISTS_RESOLVED: True,
        c.NO_LIST_REMOVED: True,
        c.DIRECTORY_NOT_EMPTY: True,
        c.CONTACT_REMOVALS_WITHIN_LIMIT: True, c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT: True,
        c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT: True, c.NO_ORPHANED_DATA: True, c.CERTIFICATE_NOT_EXPIRING: True,
        c.DIRECTORY_VALUES_FIT: True, c.DIRECTORY_REMOVALS_WITHIN_LIMIT: True,
        c.DIRECTORY_MEMBERSHIPS_WITHIN_LIMIT: True,
    }


def test_contacts_are_exactly_the_directory_users_that_qualify(synced, directory):
    sync, _, _ = synced
    mapped = dict(sync.query("SELECT source_id, contact_id FROM mapped_contacts WHERE integration = 'acme'"))
    assert mapped == expected_mapped(directory)
    contacts = dict(sync.query("SELECT source_id, contact_id FROM contacts WHERE integration = 'acme'"))
    assert contacts == expected_contacts(directory)
    excluded = {row[0] for row in sync.query("SELECT source_id FROM excluded_contacts")}
    assert excluded == set(expected_mapped(directory)) - set(expected_contacts(directory))
    # Emails are stored lower-cased, and MixedCase directory addresses exist in the demo.
    assert any(u["mail"] and u["mail"] != u["mail"].lower() for u in directory.users)
    assert all(cid == cid.lower() for cid in contacts.values())


def test_case_sensitive_exclusion_keeps_lower_case_inactive(synced, directory):
    sync, _, _ = synced
    lower = {u["id"] for u in directory.users if u["mail"] and u["accountEnabled"] and u["userType"] == "Member"
             and u["onPremisesExtensionAttributes"]["extensionAttribute1"] == "inactive"}
    assert lower, "the demo directory should hold 'inactive' in lower case"
    kept = {row[0] for row in sync.query("SELECT source_id FROM contacts")}
    assert lower <= kept
    # ... while exactly the enabled members with "Inactive" are excluded by that rule.
    upper = {u["id"] for u in directory.users if u["mail"] and u["accountEnabled"] and u["userType"] == "Member"
             and u["onPremisesExtensionAttributes"]["extensionAttribute1"] == "Inactive"}
    assert upper and not upper & kept
    on_leave = {r[0] for r in sync.query("SELECT source_id FROM excluded_contacts WHERE rule = 'On leave'")}
    assert on_leave == upper


def test_contact_fields_follow_the_default_mapping(synced, directory):
    sync, _, _ = synced
    user = next(u for u in directory.users if u["mail"] and u["businessPhones"] and u["department"])
    row = sync.query(
        "SELECT email, first_name, last_name, display_name, department, phone, employee_id, company, imported "
        "FROM mapped_contacts WHERE source_id = ?", [user["id"]])[0]
    assert row[:8] == (user["mail"].lower(), user["givenName"], user["surname"], user["displayName"],
                       user["department"], user["businessPhones"][0], user["employeeId"], user["companyName"])
    imported = json.loads(row[8])
    assert imported["extensionAttribute1"] == user["onPremisesExtensionAttributes"]["extensionAttribute1"]


def test_users_without_mail_are_import_errors(synced, directory):
    sync, _, _ = synced
    rows = sync.query("SELECT record, field, code, stage FROM import_errors WHERE integration = 'acme' "
                      "AND code = 'missing_unique_id'")
    assert {r[0] for r in rows} == {u["id"] for u in directory.users if not u["mail"]}
    assert {(r[1], r[3]) for r in rows} == {("email", "mapped_contacts")}


def test_lists_are_all_mail_enabled_groups_with_transitive_members(synced, directory):
    sync, _, _ = synced
    contacts = expected_contacts(directory)
    lists = {r[0]: r[1:] for r in sync.query(
        "SELECT list_id, kind, member_count, mail FROM distribution_lists WHERE integration = 'acme'")}
    assert set(lists) == offered_group_ids(directory)
    members: dict[str, set[str]] = {}
    for list_id, contact_id in sync.query("SELECT list_id, contact_id FROM distribution_list_members"):
        members.setdefault(list_id, set()).add(contact_id)
    for group_id in lists:
        assert members.get(group_id, set()) == expected_members(directory, group_id, contacts), group_id
        assert lists[group_id][1] == len(members.get(group_id, ()))
    security = {g["id"] for g in directory.groups if not g["mailEnabled"]}
    assert not security & set(lists)


def test_large_nested_and_cyclic_groups(synced, directory):
    sync, _, _ = synced
    special = directory.special
    contacts = expected_contacts(directory)
    all_employees = special["all_employees"]
    assert len(directory.members[all_employees]) > 2500
    raw = sync.query("SELECT count(*) FROM raw_graph_group_members WHERE group_id = ?", [all_employees])[0][0]
    assert raw == len(directory.members[all_employees])
    offered = offered_group_ids(directory)
    cycle_lists = [g for g in special["cycle"] if g in offered]
    assert cycle_lists, "the demo cycle should contain mail-enabled groups"
    for group_id in cycle_lists:
        got = {r[0] for r in sync.query("SELECT contact_id FROM distribution_list_members WHERE list_id = ?",
                                        [group_id])}
        assert got == expected_members(directory, group_id, contacts)
    parent = sync.query("SELECT nested_groups FROM distribution_lists WHERE list_id = ?",
                        [special["nested_parent"]])[0][0]
    nested = {oid for t, oid in directory.transitive_members(special["nested_parent"])
              if t == "#microsoft.graph.group"} - {special["nested_parent"]}
    assert parent == len(nested) >= 3


def test_non_user_members_are_counted_not_listed(synced, directory):
    sync, _, _ = synced
    mixed = directory.special["mixed_types"]
    expected_types: dict[str, int] = {}
    for otype, oid in directory.transitive_members(mixed):
        name = otype.removeprefix("#microsoft.graph.")
        if name not in ("user", "group"):
            expected_types[name] = expected_types.get(name, 0) + 1
    count, types = sync.query("SELECT non_user_members, non_user_member_types FROM distribution_lists "
                              "WHERE list_id = ?", [mixed])[0]
    assert json.loads(types) == expected_types
    assert count == sum(expected_types.values()) > 0


def test_materialization_metadata_shows_delta_paging_and_cost(synced, emulator, directory):
    _, result, requests = synced
    users = step_metadata(result, "raw_graph_users")
    assert (users["read_mode"], users["rows"], users["delta_items"]) == ("full", len(directory.users),
                                                                        len(directory.users))
    assert users["delta_pages"] == users["graph_requests"] == -(-len(directory.users) // emulator.delta_page_size)
    groups = step_metadata(result, "raw_graph_groups")
    assert (groups["read_mode"], groups["groups"]) == ("full", len(directory.groups))
    assert groups["memberships"] == sum(len(m) for m in directory.members.values())
    assert groups["delta_pages"] == groups["graph_requests"]
    # Each of the two Graph-reading steps makes MSAL fetch openid-configuration once and one token.
    assert requests == users["graph_requests"] + groups["graph_requests"] + 2 * 2
    assert "userPrincipalName" in users["selected_properties"]


def test_list_read_metadata_shows_paging_and_cost(make_sync, emulator, directory):
    sync = make_sync(integration("acme", emulator, source={"read": "list"}))
    before = emulator.request_count
    result = sync.run("acme")
    assert result.success
    requests = emulator.request_count - before
    users = step_metadata(result, "raw_graph_users")
    assert users["rows"] == len(directory.users) == users["graph_reported_count"]
    assert users["pages"] == 3  # 2,800 users at 999 a page
    groups = step_metadata(result, "raw_graph_groups")
    assert groups["groups"] == len(directory.groups)
    # Member pages are read through JSON $batch, 20 sub-requests a batch: first pages for every group,
    # then rounds of nextLinks for the groups with more pages.
    pages = [max(1, -(-len(directory.members.get(g["id"], ())) // 999)) for g in directory.groups]
    batches = sum(-(-sum(p >= k for p in pages) // 20) for k in range(1, max(pages) + 1))
    assert (batches, sum(pages)) == (5, 62)
    assert groups["graph_requests"] == batches + 1  # + the one /groups page
    assert groups["graph_batched_requests"] == sum(pages)
    assert users["graph_requests"] == 3
    # Each of the two Graph-reading steps makes MSAL fetch openid-configuration once and one token.
    assert requests == batches + 1 + 3 + 2 * 2
    assert "userPrincipalName" in users["selected_properties"]


def test_smaller_pages_give_the_same_contacts(make_sync, emulator, directory):
    sync = make_sync(integration("small", emulator, source={"page_size": 250, "read": "list"}))
    result = sync.run("small")
    assert result.success, failure_messages(result)
    assert step_metadata(result, "raw_graph_users")["pages"] == 12  # 2,800 users at 250 a page
    contacts = dict(sync.query("SELECT source_id, contact_id FROM contacts"))
    assert contacts == expected_contacts(directory)


def test_a_delta_round_asks_for_the_page_size_and_graph_caps_it(make_sync, emulator, directory):
    small = make_sync(integration("small", emulator, source={"page_size": 150}))
    result = small.run("small")
    assert result.success, failure_messages(result)
    # Prefer: odata.maxpagesize=150 is honoured below Graph's cap of 200 a delta page ...
    assert step_metadata(result, "raw_graph_users")["delta_pages"] == -(-len(directory.users) // 150)
    assert dict(small.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)
    # ... and 999 (the default) still gets pages of 200.
    assert emulator.delta_page_size == 200
    large = make_sync(integration("large", emulator))
    result = large.run("large")
    assert step_metadata(result, "raw_graph_users")["delta_pages"] == -(-len(directory.users) // 200)


def test_users_and_groups_download_at_the_same_time_and_a_step_run_alone_reads_by_itself(make_sync, emulator,
                                                                                           directory):
    from entra_pipeline.emulator.faults import FaultProfile

    sync = make_sync(integration("acme", emulator))
    # Every Graph request takes a moment: two reads one after the other could not interleave.
    emulator.faults.profile = FaultProfile(seed=3, slow=1.0, slow_seconds=0.05)
    start = len(emulator.request_log)
    result = sync.run("acme")
    emulator.faults.clear()
    assert result.success, failure_messages(result)
    paths = [target.split("?")[0] for _, target, _ in emulator.request_log[start:]]
    kinds = ["users" if "/users/delta" in p else "groups" for p in paths if "/delta" in p]
    first_users, last_users = kinds.index("users"), len(kinds) - 1 - kinds[::-1].index("users")
    # Group pages came while the users' pages were still coming.
    assert "groups" in kinds[first_users:last_users]
    assert kinds.count("users") == -(-len(directory.users) // emulator.delta_page_size)
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)
    # Each step reports the requests of its own read, wherever it ran.
    users, groups = step_metadata(result, "raw_graph_users"), step_metadata(result, "raw_graph_groups")
    assert users["graph_requests"] == kinds.count("users") and groups["graph_requests"] == kinds.count("groups")

    # Only the users step (a re-execution, a one-asset Materialize): it reads by itself, and nothing of groups.
    start = len(emulator.request_log)
    defs = build_defs(sync.config, sync.warehouse)
    job = defs.resolve_job_def(ENTRA_SOURCES_JOB)
    only = job.get_subset(asset_selection={dg.AssetKey("raw_graph_users")})
    assert only.execute_in_process(partition_key="acme", instance=sync.instance, run_config=QUIET).success
    paths = [target.split("?")[0] for _, target, _ in emulator.request_log[start:]]
    assert any("/users/delta" in p for p in paths) and not any("/groups" in p for p in paths)
