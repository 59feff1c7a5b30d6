"""Distribution lists end to end over the emulator: selection by bulk selector file, custom lists,
why people are not on a list, lists whose group left the directory, available groups."""

from __future__ import annotations


from entra_pipeline.sync import checks as c

from tests.support.expected import expected_contacts, expected_members, offered_group_ids
from tests.support.integrations import integration
from tests.support.runs import check_evaluations, failure_messages


KEY = "acme"
USER = "#microsoft.graph.user"


def members_of(sync, list_id: str) -> set[str]:
    return {r[0] for r in sync.query("SELECT contact_id FROM distribution_list_members WHERE list_id = ?", [list_id])}


def test_bulk_selector_file_selects_by_display_name(make_sync, emulator, directory, tmp_path):
    special = directory.special
    nested = directory.group_by_id(special["nested_parent"])["displayName"]
    everyone = directory.group_by_id(special["all_employees"])["displayName"]
    duplicate = directory.group_by_id(special["duplicate_name"][0])["displayName"]
    security = next(g for g in directory.groups if not g["mailEnabled"])["displayName"]
    (tmp_path / "lists.csv").write_bytes(
        f"\ufeff{nested}\r\n\r\n  {everyone}  \n{duplicate}\n{security}\n".encode("utf-8"))
    sync = make_sync(integration(KEY, emulator, distribution_lists={"select": "csv", "csv": "lists.csv"}))
    result = sync.run(KEY)
    assert result.success, failure_messages(result)
    contacts = expected_contacts(directory)
    lists = {r[0] for r in sync.query("SELECT list_id FROM distribution_lists")}
    assert lists == {special["nested_parent"], special["all_employees"]}
    for list_id in lists:
        assert members_of(sync, list_id) == expected_members(directory, list_id, contacts)
    assert len(members_of(sync, special["all_employees"])) > 999
    # Same-named groups: neither is imported; a plain security group is not offered.
    errors = sync.query("SELECT record, field, code FROM import_errors WHERE stage = 'distribution_lists' "
                        "ORDER BY code")
    assert errors == [(duplicate, "distribution_lists.csv", "list_name_ambiguous"),
                      (security, "distribution_lists.csv", "list_not_found")]
    evaluation = check_evaluations(result)[c.SELECTED_LISTS_RESOLVED]
    assert (evaluation.passed, evaluation.description) == (False, "2 selected lists not resolved")


def test_custom_list_from_contact_attributes(make_sync, emulator, directory):
    contacts = expected_contacts(directory)
    users = {u["id"]: u for u in directory.users}
    department = max({u["department"] for u in directory.users if u["department"]},
                     key=lambda d: sum(1 for u in directory.users if u["department"] == d))
    custom = [{"name": "Big department in DE or AT",
               "when": {"all": [{"contact_field": "department", "equals": department},
                                {"contact_field": "country", "in": ["DE", "AT"]}]}},
              {"name": "Nobody", "when": {"contact_field": "country", "equals": "XX"}}]
    sync = make_sync(integration(KEY, emulator, distribution_lists={"select": "none", "custom": custom}))
    result = sync.run(KEY)
    assert result.success, failure_messages(result)
    expected = {cid for uid, cid in contacts.items()
                if users[uid]["department"] == department and users[uid]["country"] in ("DE", "AT")}
    assert expected
    assert sync.query("SELECT list_id, kind, display_name, member_count, source_group_id FROM distribution_lists "
                      "ORDER BY list_id") == [
        ("custom:big-department-in-de-or-at", "custom", "Big department in DE or AT", len(expected), None),
        ("custom:nobody", "custom", "Nobody", 0, None)]
    assert members_of(sync, "custom:big-department-in-de-or-at") == expected


def test_non_members_are_listed_with_the_reason(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator, distribution_lists={"select": "all"}))
    assert sync.run(KEY).success
    mixed = directory.special["mixed_types"]
    edge = directory.special["edge_users"]
    contacts = expected_contacts(directory)
    users = {u["id"]: u for u in directory.users}

    def reason(uid: str) -> str:
        u = users[uid]
        if u["mail"]:
            if u["accountEnabled"] is False:
                return "excluded: Disabled account"
            if u["userType"] == "Guest":
                return "excluded: Guest"
            return "excluded: On leave"
        return "no usable Unique Contact ID"

    for list_id in (mixed, edge):
        expected = set()
        for otype, oid in directory.transitive_members(list_id):
            kind = otype.removeprefix("#microsoft.graph.")
            if otype == USER and oid not in contacts:
                expected.add((oid, "user", reason(oid)))
            elif kind not in ("user", "group"):
                expected.add((oid, kind, f"not a user ({kind})"))
        got = set(sync.query("SELECT object_id, object_type, reason FROM distribution_list_non_members "
                             "WHERE list_id = ?", [list_id]))
        assert got == expected, list_id
        counts = sync.query("SELECT users_excluded, users_without_contact_id, non_user_members FROM "
                            "distribution_lists WHERE list_id = ?", [list_id])[0]
        assert counts == (sum(1 for e in expected if e[2].startswith("excluded")),
                          sum(1 for e in expected if e[2] == "no usable Unique Contact ID"),
                          sum(1 for e in expected if e[1] != "user"))
    assert {r[0] for r in sync.query("SELECT reason FROM distribution_list_non_members WHERE list_id = ?",
                                     [edge])} >= {"excluded: Guest", "excluded: Disabled account",
                                                  "no usable Unique Contact ID"}


def test_available_groups_lists_what_could_be_selected(make_sync, emulator, directory):
    chosen = directory.special["nested_parent"]
    sync = make_sync(integration(KEY, emulator, distribution_lists={"select": "ids", "ids": [chosen]}))
    assert sync.run(KEY).success
    rows = {r[0]: r[1:] for r in sync.query(
        "SELECT group_id, kind, direct_members, selected, same_name_groups FROM available_groups")}
    assert set(rows) == offered_group_ids(directory)
    assert {gid for gid, r in rows.items() if r[2]} == {chosen}
    for gid in rows:
        assert rows[gid][1] == len(directory.members[gid])
    a, b = directory.special["duplicate_name"]
    assert rows[a][3] == rows[b][3] == 2


def test_a_group_deleted_between_syncs_removes_its_list_and_says_so(make_sync, emulator, directory_copy, directory):
    sync = make_sync(integration(KEY, emulator, distribution_lists={"select": "all"}))
    assert sync.run(KEY).success
    victim = directory.special["nested_parent"]
    name = directory.group_by_id(victim)["displayName"]
    assert members_of(sync, victim)
    changed = directory_copy
    changed.groups = [g for g in changed.groups if g["id"] != victim]
    del changed.members[victim]
    emulator.reindex()

    result = sync.run(KEY)
    assert result.success, failure_messages(result)
    assert sync.query("SELECT count(*) FROM distribution_lists WHERE list_id = ?", [victim]) == [(0,)]
    assert members_of(sync, victim) == set()
    assert sync.query("SELECT record, code, message FROM import_errors WHERE code = 'list_removed'") == [
        (victim, "list_removed", f"list {name!r} ({victim}) was removed: its group no longer exists in the "
                                 "directory")]
    evaluation = check_evaluations(result)[c.NO_LIST_REMOVED]
    assert (evaluation.passed, evaluation.description) == (False, "1 lists removed since the last sync")
    # Every other list is still exactly what the changed directory says.
    contacts = expected_contacts(changed)
    remaining = offered_group_ids(directory) - {victim}
    assert {r[0] for r in sync.query("SELECT list_id FROM distribution_lists")} == remaining
    for list_id in remaining:
        assert members_of(sync, list_id) == expected_members(changed, list_id, contacts), list_id


def test_users_who_lost_a_duplicate_id_are_named_as_such(make_sync, emulator, directory):
    everyone = directory.special["all_employees"]
    sync = make_sync(integration(KEY, emulator, mapping={"unique_id": "department"},
                                 exclusions={"disabled_accounts": False, "guests": False},
                                 distribution_lists={"select": "ids", "ids": [everyone]}))
    assert sync.run(KEY).success
    users = {u["id"]: u for u in directory.users}
    by_department: dict[str, list[str]] = {}
    for u in directory.users:
        if (u["department"] or "").strip():
            by_department.setdefault(u["department"].strip(), []).append(u["id"])
    kept = {min(ids, key=lambda i: (users[i]["accountEnabled"] is False, users[i]["userType"] == "Guest", i))
            for ids in by_department.values()}
    in_group = {oid for t, oid in directory.transitive_members(everyone) if t == USER}
    expected = {uid: ("duplicate Unique Contact ID" if (users[uid]["department"] or "").strip()
                      else "no usable Unique Contact ID") for uid in in_group - kept}
    got = dict(sync.query("SELECT object_id, reason FROM distribution_list_non_members WHERE list_id = ?",
                          [everyone]))
    assert got == expected
    assert set(expected.values()) == {"duplicate Unique Contact ID", "no usable Unique Contact ID"}
