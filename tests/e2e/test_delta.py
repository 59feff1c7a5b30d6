"""Incremental sync with Graph delta queries, end to end: a real emulator over HTTPS changed
between syncs through its change API, real Dagster runs, a real DuckDB file. Every test gets its
own small tenant, so changes never leak into other tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import pytest

from entra_pipeline.sync import checks as c
from entra_pipeline.emulator.population import generate_directory

from tests.support.expected import expected_contacts, expected_members, offered_group_ids
from tests.support.integrations import ALLOW_REMOVALS, integration, write_config
from tests.support.runs import Sync, failure_messages
from tests.support.tenant import running_emulator


USER = "#microsoft.graph.user"
GROUP = "#microsoft.graph.group"
FULL_RESYNC = {"ops": {step: {"config": {"full_resync": True}} for step in ("raw_graph_users", "raw_graph_groups")}}


@pytest.fixture
def tenant(tmp_path):
    with running_emulator(generate_directory(users=600, groups=30, seed=5), tmp_path / "certs") as server:
        yield server


@pytest.fixture
def sync(tenant, make_sync) -> Sync:
    return make_sync(integration("acme", tenant))


def synced(sync: Sync, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    result = sync.run("acme", run_config)
    assert result.success, failure_messages(result)
    return result


def metadata(result: dg.ExecuteInProcessResult, step: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == step]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def contacts(sync: Sync) -> dict[str, str]:
    return dict(sync.query("SELECT source_id, contact_id FROM contacts WHERE integration = 'acme'"))


def group_lists(sync: Sync) -> dict[str, set[str]]:
    """source group id -> contact ids on its list."""
    out: dict[str, set[str]] = {gid: set() for (gid,) in sync.query(
        "SELECT source_group_id FROM distribution_lists WHERE kind <> 'custom'")}
    for gid, cid in sync.query("SELECT l.source_group_id, m.contact_id FROM distribution_list_members m "
                               "JOIN distribution_lists l USING (integration, list_id) WHERE l.kind <> 'custom'"):
        out[gid].add(cid)
    return out


def assert_matches_directory(sync: Sync, directory) -> None:
    """Contacts and every list exactly as computed from the directory itself."""
    expected = expected_contacts(directory)
    assert contacts(sync) == expected
    lists = group_lists(sync)
    assert set(lists) == offered_group_ids(directory)
    for gid, members in lists.items():
        assert members == expected_members(directory, gid, expected), gid


def last_run(sync: Sync) -> dict:
    cursor_rows = sync.query("SELECT * FROM sync_runs ORDER BY finished_at DESC LIMIT 1")
    con = duckdb.connect(str(sync.warehouse), read_only=True)
    try:
        names = [d[0] for d in con.execute("SELECT * FROM sync_runs LIMIT 0").description]
    finally:
        con.close()
    return dict(zip(names, cursor_rows[0]))


def changes_of(sync: Sync, run_id: str) -> dict[str, str]:
    return dict(sync.query("SELECT contact_id, change FROM contact_changes WHERE run_id = ?", [run_id]))


def member_user(directory, group_id: str, *, contact: bool = True) -> dict:
    """A user who is a direct member of the group (and a synced contact, by default)."""
    kept = expected_contacts(directory)
    for otype, oid in directory.members[group_id]:
        if otype == USER and (oid in kept) == contact:
            return directory.user_by_id(oid)
    raise AssertionError(f"no suitable member in {group_id}")


def offered_group(directory, *, min_members: int = 5) -> dict:
    for group in directory.groups:
        users = [m for m in directory.members.get(group["id"], []) if m[0] == USER]
        if group["mailEnabled"] and len(users) >= min_members:
            return group
    raise AssertionError("no offered group")


# -- full round, then changes ---------------------------------------------------------------------

def test_first_sync_is_a_full_round_and_the_next_reads_only_changes(sync, tenant):
    first = synced(sync)
    assert metadata(first, "raw_graph_users")["read_mode"] == "full"
    assert metadata(first, "raw_graph_users")["read_reason"] == "first delta sync of this integration"
    assert_matches_directory(sync, tenant.directory)
    links = dict(sync.query("SELECT resource, delta_link FROM delta_state"))
    assert set(links) == {"users", "groups"} and all("$deltatoken=" in link for link in links.values())
    run = last_run(sync)
    assert (run["read_mode"], run["contacts_added"], run["contacts_removed"]) == (
        "full", len(expected_contacts(tenant.directory)), 0)

    before = sync.snapshot(content_only=True)
    second = synced(sync)
    users_meta, groups_meta = metadata(second, "raw_graph_users"), metadata(second, "raw_graph_groups")
    assert (users_meta["read_mode"], users_meta["delta_items"], users_meta["users_added"],
            users_meta["users_updated"], users_meta["users_removed"]) == ("incremental", 0, 0, 0, 0)
    assert (groups_meta["read_mode"], groups_meta["delta_items"]) == ("incremental", 0)
    # One page of nothing per resource, plus the token request.
    assert users_meta["graph_requests"] <= 2 and groups_meta["graph_requests"] <= 2
    after = sync.snapshot(content_only=True)
    assert {t: rows for t, rows in after.items() if t != "delta_state"} == \
        {t: rows for t, rows in before.items() if t != "delta_state"}
    assert changes_of(sync, second.run_id) == {}
    run = last_run(sync)
    assert (run["read_mode"], run["contacts_added"], run["contacts_updated"], run["contacts_removed"]) == (
        "incremental", 0, 0, 0)


def test_changes_are_applied_incrementally(sync, tenant):
    synced(sync)
    directory = tenant.directory
    kept = expected_contacts(directory)
    group = offered_group(directory)
    moved = member_user(directory, group["id"])                   # department changes
    on_leave = next(u for u in directory.users if u["id"] in kept and u is not moved)
    soft, hard = [u for u in directory.users if u["id"] in kept and u not in (moved, on_leave)][:2]
    leaver = member_user(directory, group["id"])
    if leaver is moved:
        leaver = next(directory.user_by_id(oid) for t, oid in directory.members[group["id"]]
                      if t == USER and oid in kept and oid != moved["id"])
    joiner_into_group = next(u for u in directory.users if u["id"] in kept
                             and u["id"] not in (on_leave["id"], soft["id"], hard["id"])
                             and (USER, u["id"]) not in directory.members[group["id"]])

    tenant.update_user(moved["id"], {"department": "Moved Department"})
    tenant.update_user(on_leave["id"], {"onPremisesExtensionAttributes": {"extensionAttribute1": "Inactive"}})
    tenant.soft_delete_user(soft["id"])
    tenant.hard_delete_user(hard["id"])
    new = tenant.add_user({"id": "0a0a0a0a-0000-4000-8000-000000000001", "userPrincipalName": "new.person@contoso.com",
                           "displayName": "New Person", "givenName": "New", "surname": "Person",
                           "mail": "New.Person@contoso.com", "accountEnabled": True, "userType": "Member",
                           "department": "Sales", "onPremisesExtensionAttributes": {}})
    tenant.add_member(group["id"], new["id"])
    tenant.add_member(group["id"], joiner_into_group["id"])
    tenant.remove_member(group["id"], leaver["id"])

    result = synced(sync)
    users_meta = metadata(result, "raw_graph_users")
    assert users_meta["read_mode"] == "incremental"
    assert (users_meta["users_added"], users_meta["users_updated"], users_meta["users_removed"]) == (1, 2, 2)
    groups_meta = metadata(result, "raw_graph_groups")
    assert groups_meta["read_mode"] == "incremental"
    assert [metadata(result, step)["mode"] for step in ("mapped_contacts", "filtered_contacts",
                                                        "distribution_lists")] == ["incremental"] * 3
    assert metadata(result, "distribution_lists")["lists_rebuilt"] == 0
    assert_matches_directory(sync, tenant.directory)
    members = group_lists(sync)[group["id"]]
    assert {"new.person@contoso.com", kept[joiner_into_group["id"]]} <= members
    # History: who joined, changed and left in this run, and what changed.
    assert changes_of(sync, result.run_id) == {
        "new.person@contoso.com": "joined", kept[moved["id"]]: "updated",
        kept[on_leave["id"]]: "left", kept[soft["id"]]: "left", kept[hard["id"]]: "left"}
    [(fields,)] = sync.query("SELECT changes FROM contact_changes WHERE run_id = ? AND change = 'updated'",
                             [result.run_id])
    assert '"field":"department"' in fields.replace(" ", "") and "Moved Department" in fields
    assert sync.query("SELECT rule FROM excluded_contacts WHERE source_id = ?", [on_leave["id"]]) == [("On leave",)]


def test_restored_user_comes_back(sync, tenant):
    synced(sync)
    kept = expected_contacts(tenant.directory)
    user = next(u for u in tenant.directory.users if u["id"] in kept)
    tenant.soft_delete_user(user["id"])
    synced(sync)
    assert user["id"] not in contacts(sync)
    tenant.restore_user(user["id"])
    result = synced(sync)
    assert contacts(sync)[user["id"]] == kept[user["id"]]
    assert changes_of(sync, result.run_id) == {kept[user["id"]]: "joined"}
    assert_matches_directory(sync, tenant.directory)


def test_a_round_replayed_from_an_older_delta_link_changes_nothing(sync, tenant):
    synced(sync)
    kept = expected_contacts(tenant.directory)
    changed = [u for u in tenant.directory.users if u["id"] in kept][:5]
    older = sync.query("SELECT * FROM delta_state")
    for user in changed[:3]:
        tenant.update_user(user["id"], {"officeLocation": "Replay 1"})
    tenant.hard_delete_user(changed[3]["id"])
    tenant.soft_delete_user(changed[4]["id"])
    synced(sync)
    applied = sync.snapshot(content_only=True)
    con = duckdb.connect(str(sync.warehouse))
    con.execute("DELETE FROM delta_state")
    con.executemany("INSERT INTO delta_state VALUES (?, ?, ?, ?, ?, ?, ?)", older)
    con.close()
    replay = synced(sync)  # the same changes again
    assert metadata(replay, "raw_graph_users")["delta_items"] >= 5
    again = sync.snapshot(content_only=True)
    for table in ("raw_graph_users", "raw_graph_group_members", "contacts", "distribution_list_members"):
        assert again[table] == applied[table], table
    assert changes_of(sync, replay.run_id) == {}
    assert_matches_directory(sync, tenant.directory)


def test_a_user_leaving_a_nested_group_leaves_the_parent_list(sync, tenant):
    synced(sync)
    directory = tenant.directory
    kept = expected_contacts(directory)
    parent_id = directory.special["nested_parent"]
    parent = directory.group_by_id(parent_id if isinstance(parent_id, str) else parent_id["id"])
    children = [oid for t, oid in directory.members[parent["id"]] if t == GROUP]
    # A contact reached only through one child group.
    direct = {oid for t, oid in directory.members[parent["id"]] if t == USER}
    candidates = [(child, oid) for child in children for t, oid in directory.members[child]
                  if t == USER and oid in kept and oid not in direct
                  and sum(1 for other in children if (USER, oid) in directory.members[other]) == 1]
    child, user_id = candidates[0]
    assert kept[user_id] in group_lists(sync)[parent["id"]]
    tenant.remove_member(child, user_id)
    synced(sync)
    assert kept[user_id] not in group_lists(sync)[parent["id"]]
    assert_matches_directory(sync, tenant.directory)


def test_a_group_split_over_several_delta_pages(sync, tenant):
    tenant.delta_page_size = 7
    tenant.delta_members_per_page = 40
    big = max(tenant.directory.groups, key=lambda g: len(tenant.directory.members.get(g["id"], [])))
    assert len(tenant.directory.members[big["id"]]) > 3 * 40
    result = synced(sync)
    assert metadata(result, "raw_graph_groups")["delta_pages"] > 30 // 7 + len(tenant.directory.members[big["id"]]) // 40 - 1
    stored = {m for (m,) in sync.query("SELECT member_id FROM raw_graph_group_members WHERE group_id = ?",
                                       [big["id"]])}
    assert stored == {oid for _, oid in tenant.directory.members[big["id"]]}
    assert_matches_directory(sync, tenant.directory)
    # Changes to the big group arrive split too and are merged by group id.
    kept = expected_contacts(tenant.directory)
    leavers = [oid for t, oid in tenant.directory.members[big["id"]] if t == USER and oid in kept][:60]
    for oid in leavers:
        tenant.remove_member(big["id"], oid)
    tenant.update_group(big["id"], {"displayName": "Renamed big group"})
    result = synced(sync)
    assert metadata(result, "raw_graph_groups")["memberships_removed"] == 60
    assert sync.query("SELECT display_name FROM distribution_lists WHERE source_group_id = ?",
                      [big["id"]]) == [("Renamed big group",)]
    assert_matches_directory(sync, tenant.directory)


def test_deleted_group_takes_its_list_away(sync, tenant):
    synced(sync)
    group = offered_group(tenant.directory, min_members=1)
    tenant.delete_group(group["id"])
    synced(sync, ALLOW_REMOVALS)
    assert group["id"] not in group_lists(sync)
    assert sync.query("SELECT count(*) FROM raw_graph_groups WHERE id = ?", [group["id"]]) == [(0,)]
    assert sync.query("SELECT count(*) FROM raw_graph_group_members WHERE group_id = ? OR member_id = ?",
                      [group["id"], group["id"]]) == [(0,)]
    assert_matches_directory(sync, tenant.directory)


# -- expired tokens and full rounds ----------------------------------------------------------------

@pytest.mark.parametrize("status", [410, 400])
def test_expired_token_falls_back_to_a_full_round_with_the_fresh_sync_result(sync, tenant, tmp_path, status):
    synced(sync)
    tenant.delta_expiry_status = status
    kept = expected_contacts(tenant.directory)
    gone = next(u for u in tenant.directory.users if u["id"] in kept)
    tenant.hard_delete_user(gone["id"])
    tenant.update_user(next(u["id"] for u in tenant.directory.users if u["id"] in kept),
                       {"displayName": "Renamed Person"})
    tenant.expire_delta_tokens()
    result = synced(sync)
    for step in ("raw_graph_users", "raw_graph_groups"):
        meta = metadata(result, step)
        assert (meta["read_mode"], meta["delta_token_expired"]) == ("full", True)
        assert "Graph no longer accepts the stored delta token" in meta["read_reason"]
    assert metadata(result, "raw_graph_users")["reconciled_users_removed"] == 1
    assert any("Graph no longer accepts the stored delta token" in e.message
               for run_id in result.run_ids for e in sync.instance.all_logs(run_id) if e.level >= 30)

    fresh = Sync(write_config(tmp_path / "fresh.yaml", integration("acme", tenant)), tmp_path / "fresh.duckdb")
    synced(fresh)
    tables = ["raw_graph_users", "raw_graph_groups", "raw_graph_group_members", "mapped_contacts", "contacts",
              "excluded_contacts", "distribution_lists", "distribution_list_members", "import_errors"]
    ours, theirs = sync.snapshot(content_only=True), fresh.snapshot(content_only=True)
    for table in tables:
        assert ours[table] == theirs[table], table
    assert changes_of(sync, result.run_id) == {kept[gone["id"]]: "left", kept[next(
        u["id"] for u in tenant.directory.users if u["displayName"] == "Renamed Person")]: "updated"}


def test_full_resync_corrects_drift_and_reports_it(sync, tenant):
    synced(sync)
    kept = expected_contacts(tenant.directory)
    victim = next(iter(kept))
    con = duckdb.connect(str(sync.warehouse))
    con.execute("DELETE FROM raw_graph_users WHERE id = ?", [victim])  # a change delta never reported
    con.close()
    synced(sync)  # incremental: nothing tells it the user is missing
    assert sync.query("SELECT count(*) FROM raw_graph_users WHERE id = ?", [victim]) == [(0,)]
    result = synced(sync, FULL_RESYNC)
    meta = metadata(result, "raw_graph_users")
    assert (meta["read_mode"], meta["reconciled_users_added"], meta["reconciled_users_removed"],
            meta["reconciled_users_updated"]) == ("full", 1, 0, 0)
    assert meta["read_reason"] == "full resync asked for in the run config (full_resync: true)"
    assert sync.query("SELECT count(*) FROM raw_graph_users WHERE id = ?", [victim]) == [(1,)]
    assert contacts(sync)[victim] == kept[victim]
    assert_matches_directory(sync, tenant.directory)
    assert last_run(sync)["read_mode"] == "full"


def test_a_full_round_undoes_hand_edits_and_an_incremental_sync_leaves_them(sync, tenant):
    synced(sync)
    kept = expected_contacts(tenant.directory)
    victim, lister = sorted(kept.values())[:2]
    [(list_id,)] = sync.query("SELECT list_id FROM distribution_lists ORDER BY list_id LIMIT 1")
    assert not sync.query("SELECT 1 FROM distribution_list_members WHERE list_id = ? AND contact_id = ?",
                          [list_id, lister])
    before = sync.snapshot(content_only=True)
    con = duckdb.connect(str(sync.warehouse))
    con.execute("UPDATE contacts SET job_title = 'Hand Edited' WHERE contact_id = ?", [victim])
    con.execute("INSERT INTO distribution_list_members SELECT integration, ?, ?, run_id, synced_at "
                "FROM distribution_list_members LIMIT 1", [list_id, lister])
    con.close()

    # Incremental, nothing changed in the directory: the edits stay (as the README says).
    synced(sync)
    assert sync.query("SELECT job_title FROM contacts WHERE contact_id = ?", [victim]) == [("Hand Edited",)]
    assert len(sync.query("SELECT 1 FROM distribution_list_members WHERE list_id = ? AND contact_id = ?",
                          [list_id, lister])) == 1
    # A full round rebuilds both from the directory.
    synced(sync, FULL_RESYNC)
    after = sync.snapshot(content_only=True)
    for table in ("mapped_contacts", "contacts", "excluded_contacts", "distribution_lists",
                  "distribution_list_members", "distribution_list_non_members"):
        assert after[table] == before[table], table
    assert_matches_directory(sync, tenant.directory)


def test_periodic_full_reconciliation(sync, tenant, monkeypatch):
    synced(sync)
    con = duckdb.connect(str(sync.warehouse))
    con.execute("UPDATE delta_state SET full_round_at = ?", [datetime.now(timezone.utc) - timedelta(days=8)])
    con.close()
    result = synced(sync)
    meta = metadata(result, "raw_graph_users")
    assert meta["read_mode"] == "full"
    assert meta["read_reason"].startswith("periodic full reconciliation: the last full round was 8 days ago")
    next_run = synced(sync)
    assert metadata(next_run, "raw_graph_users")["read_mode"] == "incremental"


def test_changed_mapping_needs_a_full_round(sync, tenant, make_sync):
    synced(sync)
    wider = make_sync(integration("acme", tenant, mapping={"fields": {"extensionAttribute2": "department"}}))
    result = synced(wider)
    meta = metadata(result, "raw_graph_users")
    assert meta["read_mode"] == "full"
    assert meta["read_reason"].startswith("the mapping or exclusions now read other directory properties")


def test_manager_fields_through_delta(tenant, make_sync, tmp_path):
    mapping = {"fields": {"managerMail": "manager_email", "managerId": "manager_id"}}
    sync = make_sync(integration("acme", tenant, mapping=mapping))
    synced(sync)
    directory = tenant.directory
    kept = expected_contacts(directory)

    def manager_mail(user_id):
        found = directory.manager(user_id)
        return found[1].get("mail") if found and found[0] == USER else None

    rows = dict((r[0], (r[1], r[2])) for r in sync.query("SELECT source_id, manager_id, manager_email FROM contacts"))
    with_manager = [uid for uid in kept if directory.manager(uid) and directory.manager(uid)[0] == USER]
    assert with_manager
    for uid in with_manager:
        assert rows[uid] == (directory.manager_of[uid], manager_mail(uid)), uid
    user, new_manager = with_manager[0], next(uid for uid in kept if uid != with_manager[0])
    manager_of_many = with_manager[1]
    old_manager = directory.manager_of[manager_of_many]
    tenant.set_manager(user, new_manager)
    tenant.update_user(old_manager, {"mail": "renamed.manager@contoso.com"})
    synced(sync)
    rows = dict((r[0], (r[1], r[2])) for r in sync.query("SELECT source_id, manager_id, manager_email FROM contacts"))
    assert rows[user] == (new_manager, manager_mail(user))
    assert rows[manager_of_many] == (old_manager, "renamed.manager@contoso.com")
    tenant.set_manager(user, None)
    synced(sync)
    assert sync.query("SELECT manager_id, manager_email FROM contacts WHERE source_id = ?", [user]) == [(None, None)]
    # A sync with nothing changed re-maps nobody (managers without mail included) ...
    quiet = synced(sync)
    assert (metadata(quiet, "mapped_contacts")["mode"], metadata(quiet, "mapped_contacts")["users_mapped"]) == (
        "incremental", 0)
    assert any(directory.manager(uid) and directory.manager(uid)[0] == USER and manager_mail(uid) is None
               for uid in kept)
    # ... and every table is what a first sync of the same directory writes.
    assert_same_as_fresh_sync(sync, tenant, tmp_path, "fresh", mapping=mapping)


# -- guards ----------------------------------------------------------------------------------------

def test_mass_deletion_through_delta_is_blocked_then_approved(sync, tenant):
    synced(sync)
    kept = expected_contacts(tenant.directory)
    doomed = list(kept)[: len(kept) // 3]
    for uid in doomed:
        tenant.hard_delete_user(uid)
    before = sync.snapshot()
    blocked = sync.run("acme")
    assert not blocked.success
    outcomes = {e.check_name: e.passed for e in blocked.get_asset_check_evaluations()}
    assert outcomes[c.CONTACT_REMOVALS_WITHIN_LIMIT] is False
    after = sync.snapshot()
    for table in ("contacts", "excluded_contacts", "distribution_lists", "distribution_list_members",
                  "contact_changes"):
        assert after[table] == before[table], table
    approved = synced(sync, ALLOW_REMOVALS)
    assert set(contacts(sync)) == set(kept) - set(doomed)
    assert sorted(changes_of(sync, approved.run_id).values()) == ["left"] * len(doomed)
    assert_matches_directory(sync, tenant.directory)


def test_a_directory_returning_zero_users_is_blocked_and_keeps_the_delta_state(sync, tenant):
    synced(sync)
    for user in list(tenant.directory.users):
        tenant.hard_delete_user(user["id"])
    before = sync.snapshot()
    result = sync.run("acme", ALLOW_REMOVALS)
    assert not result.success
    outcomes = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert outcomes[c.DIRECTORY_NOT_EMPTY] is False
    after = sync.snapshot()
    for table in ("raw_graph_users", "delta_state", "contacts", "distribution_list_members"):
        if table == "delta_state":
            assert [r for r in after[table] if "'users'" in r] == [r for r in before[table] if "'users'" in r]
        else:
            assert after[table] == before[table], table


# -- preview ---------------------------------------------------------------------------------------

def test_preview_shows_exact_changes_and_touches_no_contact_table(sync, tenant):
    synced(sync)
    directory = tenant.directory
    kept = expected_contacts(directory)
    group = offered_group(directory)
    moved = member_user(directory, group["id"])
    leaving = next(uid for uid in kept if uid != moved["id"])
    old_title = moved["jobTitle"]
    tenant.update_user(moved["id"], {"jobTitle": "Chief Previewer"})
    tenant.hard_delete_user(leaving)
    tenant.add_user({"id": "0a0a0a0a-0000-4000-8000-000000000002", "userPrincipalName": "pre.view@contoso.com",
                     "displayName": "Pre View", "mail": "pre.view@contoso.com", "accountEnabled": True,
                     "userType": "Member", "onPremisesExtensionAttributes": {}})
    tenant.add_member(group["id"], "0a0a0a0a-0000-4000-8000-000000000002")

    protected = ("contacts", "excluded_contacts", "distribution_lists", "distribution_list_members",
                 "distribution_list_non_members", "contact_changes", "mapped_contacts", "import_errors",
                 "available_groups", "all_contacts", "all_contact_changes", "all_contacts_excluded")
    before, lists_before = sync.snapshot(), group_lists(sync)
    assert any(kept[leaving] in members for members in lists_before.values())
    result = sync.run("acme", preview=True)
    assert result.success
    after = sync.snapshot()
    for table in protected:
        assert after[table] == before[table], table

    rows = sync.query("SELECT change, contact_id, list_id, details FROM sync_preview WHERE integration = 'acme'")
    by_kind: dict[str, set] = {}
    for change, contact_id, list_id, _ in rows:
        by_kind.setdefault(change, set()).add((contact_id, list_id))
    assert by_kind.pop("contact_joined") == {("pre.view@contoso.com", None)}
    assert by_kind.pop("contact_left") == {(kept[leaving], None)}
    assert by_kind.pop("contact_updated") == {(kept[moved["id"]], None)}
    # The merged directory (one integration here): the same people join, change and leave.
    assert by_kind.pop("directory_joined") == {("pre.view@contoso.com", None)}
    assert by_kind.pop("directory_left") == {(kept[leaving], None)}
    assert by_kind.pop("directory_updated") == {(kept[moved["id"]], None)}
    new_id = "0a0a0a0a-0000-4000-8000-000000000002"
    assert by_kind.pop("list_member_added") == {
        ("pre.view@contoso.com", gid) for gid in offered_group_ids(tenant.directory)
        if (USER, new_id) in tenant.directory.transitive_members(gid)}
    assert by_kind.pop("list_member_removed") == {
        (kept[leaving], gid) for gid, members in lists_before.items() if kept[leaving] in members}
    assert by_kind == {}
    [details] = [d for change, cid, _, d in rows if change == "contact_updated"]
    assert "Chief Previewer" in details and "job_title" in details
    [merged] = [json.loads(d) for change, cid, _, d in rows if change == "directory_updated"]
    assert merged == {"fields": [{"field": "job_title", "old": old_title, "new": "Chief Previewer",
                                  "old_source": "acme", "new_source": "acme"}]}
    meta = metadata(result, "sync_preview")
    assert meta["changes"] == len(rows) and meta["would_block"] == "nothing"
    # The run summary shows a preview, not a sync that changed nothing.
    [(kind, stages, added, removed)] = sync.query(
        "SELECT run_kind, stages_committed, contacts_added, list_members_removed FROM sync_runs WHERE run_id = ?",
        [result.run_id])
    assert (kind, sorted(stages.split(", ")), added, removed) == (
        "preview", ["raw_graph_groups", "raw_graph_users", "sync_preview"], None, None)

    # The preview's picture is what the sync then does.
    applied = synced(sync)
    assert changes_of(sync, applied.run_id) == {"pre.view@contoso.com": "joined", kept[leaving]: "left",
                                                kept[moved["id"]]: "updated"}
    assert sync.query("SELECT run_kind, contacts_added, contacts_removed FROM sync_runs WHERE run_id = ?",
                      [applied.run_id]) == [("sync", 1, 1)]


def test_preview_names_the_guard_that_would_block(sync, tenant):
    synced(sync)
    kept = expected_contacts(tenant.directory)
    for uid in list(kept)[: len(kept) // 2]:
        tenant.hard_delete_user(uid)
    before = sync.snapshot()
    result = sync.run("acme", preview=True)
    assert result.success
    assert sync.snapshot()["contacts"] == before["contacts"]
    blocks = sync.query("SELECT json_extract_string(details, '$.check') FROM sync_preview "
                        "WHERE change = 'check_would_block' ORDER BY 1")
    # Contacts that leave also leave their lists: their memberships answer to the guard too.
    assert blocks == [(c.CONTACT_REMOVALS_WITHIN_LIMIT,), (c.DIRECTORY_REMOVALS_WITHIN_LIMIT,),
                      (c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT,)]
    assert sync.query("SELECT count(*) FROM sync_preview WHERE change = 'contact_left'") == [(len(kept) // 2,)]


def test_a_groups_round_cut_short_writes_nothing_and_the_next_sync_recovers(sync, tenant):
    synced(sync)
    group = offered_group(tenant.directory)
    tenant.remove_member(group["id"], member_user(tenant.directory, group["id"])["id"])
    before = sync.snapshot()
    tenant.faults.truncate_paging("/v1.0/groups/delta", times=1)
    result = sync.run("acme")
    assert not result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == c.RAW_GROUPS_COMPLETE]
    assert not evaluation.passed
    assert evaluation.description == ("paging stopped early: the groups delta round (changes) ended on page 1 "
                                      "without a nextLink or deltaLink")
    after = sync.snapshot()
    for table in ("raw_graph_groups", "raw_graph_group_members", "distribution_lists", "distribution_list_members"):
        assert after[table] == before[table], table
    assert [r for r in after["delta_state"] if "'groups'" in r] == [r for r in before["delta_state"] if "'groups'" in r]
    synced(sync)
    assert_matches_directory(sync, tenant.directory)


FRESH_EQUAL = ["raw_graph_users", "raw_graph_groups", "raw_graph_group_members", "mapped_contacts",
               "mapped_user_ids", "contacts", "excluded_contacts", "distribution_lists",
               "distribution_list_members", "distribution_list_non_members", "import_errors"]


def assert_same_as_fresh_sync(sync: Sync, tenant, tmp_path, name: str, **overrides) -> None:
    """Every derived table equals what a first sync of the same directory writes (with the same
    integration ``overrides``)."""
    fresh = Sync(write_config(tmp_path / f"{name}.yaml", integration("acme", tenant, **overrides)),
                 tmp_path / f"{name}.duckdb")
    synced(fresh)
    ours, theirs = sync.snapshot(content_only=True), fresh.snapshot(content_only=True)
    for table in FRESH_EQUAL:
        assert ours[table] == theirs[table], table


def test_incremental_stages_equal_a_fresh_sync_through_duplicates_and_rule_changes(sync, tenant, tmp_path):
    synced(sync)
    directory = tenant.directory
    kept = expected_contacts(directory)
    a, b, c_, d, e, f = [directory.user_by_id(uid) for uid in list(kept)[:6]]
    # b takes a's mail: a duplicate; both enabled members, so the smaller object id wins.
    tenant.update_user(b["id"], {"mail": a["mail"].upper()})
    # c's mail becomes invalid, d's empty: import errors instead of contacts.
    tenant.update_user(c_["id"], {"mail": "not-an-address"})
    tenant.update_user(d["id"], {"mail": None})
    # e goes on leave (excluded by a rule), f is disabled (excluded by the built-in switch).
    tenant.update_user(e["id"], {"onPremisesExtensionAttributes": {"extensionAttribute1": "Inactive"}})
    tenant.update_user(f["id"], {"accountEnabled": False})
    result = synced(sync)
    assert metadata(result, "mapped_contacts")["mode"] == "incremental"
    assert metadata(result, "filtered_contacts")["mode"] == "incremental"
    # (tests.support.expected's expected_contacts knows no duplicates or invalid ids: compare with a fresh sync.)
    assert_same_as_fresh_sync(sync, tenant, tmp_path, "fresh1")
    codes = dict(sync.query("SELECT record, code FROM import_errors WHERE stage = 'mapped_contacts' "
                            "AND record IN (?, ?, ?, ?)", [a["id"], b["id"], c_["id"], d["id"]]))
    assert codes == {a["id"]: "duplicate_unique_id", b["id"]: "duplicate_unique_id",
                     c_["id"]: "invalid_unique_id", d["id"]: "missing_unique_id"}

    # The winner leaves: the other user sharing the ID becomes the contact, as a full mapping says.
    winner = min(a["id"], b["id"])
    tenant.soft_delete_user(winner)
    tenant.update_user(c_["id"], {"mail": "c.fixed@contoso.com"})
    tenant.update_user(e["id"], {"onPremisesExtensionAttributes": {"extensionAttribute1": None}})
    result = synced(sync)
    assert metadata(result, "mapped_contacts")["mode"] == "incremental"
    assert_same_as_fresh_sync(sync, tenant, tmp_path, "fresh2")
    assert contacts(sync)[max(a["id"], b["id"])] == a["mail"].lower()
    assert sync.query("SELECT count(*) FROM import_errors WHERE record IN (?, ?)", [a["id"], b["id"]]) == [(0,)]


def test_a_changed_rule_recomputes_every_contact(sync, tenant, make_sync):
    synced(sync)
    stricter = make_sync(integration("acme", tenant, exclusions={"rules": [
        {"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"},
        {"name": "No sales", "contact_field": "department", "equals": "Sales"}]}))
    result = synced(stricter, ALLOW_REMOVALS)
    assert metadata(result, "mapped_contacts")["mode"] == "incremental"
    assert metadata(result, "filtered_contacts")["mode"] == "full"
    assert stricter.query("SELECT count(*) FROM contacts WHERE department = 'Sales'") == [(0,)]
    # Everyone the old rules kept who works in Sales, and no one else, is now excluded by the new rule.
    sales = {uid for uid in expected_contacts(tenant.directory)
             if tenant.directory.user_by_id(uid)["department"] == "Sales"}
    assert sales and {sid for (sid,) in stricter.query(
        "SELECT source_id FROM excluded_contacts WHERE rule = 'No sales'")} == sales


def test_many_changes_recompute_everything_with_the_same_result(sync, tenant, tmp_path):
    synced(sync)
    users = [u["id"] for u in tenant.directory.users]
    for n, uid in enumerate(users[: len(users) // 3]):  # a third of the users: above the 25% limit
        tenant.update_user(uid, {"jobTitle": f"Title {n % 4}"})
    result = synced(sync)
    assert metadata(result, "raw_graph_users")["read_mode"] == "incremental"
    assert [metadata(result, step)["mode"] for step in ("mapped_contacts", "filtered_contacts")] == ["full"] * 2
    assert_same_as_fresh_sync(sync, tenant, tmp_path, "fresh-many")


def test_switching_from_list_reads_to_delta_starts_with_a_full_round(tenant, make_sync, tmp_path):
    listing = make_sync(integration("acme", tenant, source={"read": "list"}))
    synced(listing)
    assert listing.query("SELECT count(*) FROM delta_state") == [(0,)]
    kept = expected_contacts(tenant.directory)
    tenant.hard_delete_user(next(iter(kept)))
    delta_sync = make_sync(integration("acme", tenant))
    result = synced(delta_sync)
    assert metadata(result, "raw_graph_users")["read_reason"] == "first delta sync of this integration"
    assert metadata(result, "raw_graph_users")["reconciled_users_removed"] == 1
    assert_matches_directory(delta_sync, tenant.directory)
    assert_same_as_fresh_sync(delta_sync, tenant, tmp_path, "fresh-switch")


def test_nested_group_changes_rebuild_the_lists_containing_them(sync, tenant, tmp_path):
    synced(sync)
    directory = tenant.directory
    offered = [g["id"] for g in directory.groups if g["mailEnabled"]]
    parent, child = offered[0], offered[1]
    holder, nested = next((gid, oid) for gid, members in directory.members.items() for t, oid in members
                          if t == GROUP and gid != parent)
    tenant.add_member(parent, child)                                   # a group nested into another
    tenant.remove_member(holder, nested)                               # and one taken out
    tenant.update_group(offered[2], {"displayName": "Renamed list"})   # a list renamed
    result = synced(sync, ALLOW_REMOVALS)
    meta = metadata(result, "distribution_lists")
    # parent and the renamed list, plus every selected list that contains parent or holder
    rebuilt = ({parent, offered[2]} | {g for g in offered if (GROUP, parent) in directory.transitive_members(g)
                                       or (GROUP, holder) in directory.transitive_members(g)})
    assert (meta["mode"], meta["lists_rebuilt"]) == ("incremental", len(rebuilt | ({holder} & set(offered))))
    assert_matches_directory(sync, directory)
    assert_same_as_fresh_sync(sync, tenant, tmp_path, "fresh-nested")


def test_custom_lists_follow_changed_contacts(tenant, make_sync, tmp_path):
    custom = {"select": "all", "custom": [{"name": "Sales team", "when": {"contact_field": "department",
                                                                          "equals": "Sales"}}]}
    sync = make_sync(integration("acme", tenant, distribution_lists=custom))
    synced(sync)
    kept = expected_contacts(tenant.directory)
    joining, leaving = None, None
    for uid in kept:
        department = tenant.directory.user_by_id(uid)["department"]
        if department != "Sales" and joining is None:
            joining = uid
        elif department == "Sales" and leaving is None:
            leaving = uid
    tenant.update_user(joining, {"department": "Sales"})
    tenant.update_user(leaving, {"department": "Finance"})
    result = synced(sync)
    assert metadata(result, "distribution_lists")["mode"] == "incremental"
    members = {cid for (cid,) in sync.query("SELECT contact_id FROM distribution_list_members "
                                            "WHERE list_id = 'custom:sales-team'")}
    expected = {cid for uid, cid in kept.items() if tenant.directory.user_by_id(uid)["department"] == "Sales"}
    assert members == expected and kept[joining] in members and kept[leaving] not in members
    assert sync.query("SELECT member_count FROM distribution_lists WHERE list_id = 'custom:sales-team'") == [
        (len(expected),)]
    assert_same_as_fresh_sync(sync, tenant, tmp_path, "fresh", distribution_lists=custom)


def test_a_delta_link_for_another_graph_endpoint_is_never_followed(sync, tenant):
    synced(sync)
    # As if the Graph URL had changed since (another cloud, or a demo tenant restarted elsewhere).
    con = duckdb.connect(str(sync.warehouse))
    con.execute("UPDATE delta_state SET delta_link = replace(delta_link, '127.0.0.1', 'graph.example.invalid')")
    con.close()
    result = synced(sync)
    for step in ("raw_graph_users", "raw_graph_groups"):
        meta = metadata(result, step)
        assert meta["read_mode"] == "full"
        assert meta["read_reason"].startswith("the stored deltaLink points to another Graph endpoint")
    assert_matches_directory(sync, tenant.directory)
    assert all("graph.example.invalid" not in link for (link,) in sync.query("SELECT delta_link FROM delta_state"))
