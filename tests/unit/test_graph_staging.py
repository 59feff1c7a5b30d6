"""A full delta round of users or groups staged page by page in a scratch DuckDB file, then
applied to a real warehouse file: the stored rows are exactly what applying every item in order
gives (an object repeated on later pages, removed, naming a manager, a group's members in
slices), the same as the round held in memory, with its change counts and import errors, and the
scratch file gone afterwards."""

from __future__ import annotations

import json
import os

import pytest

from entra_pipeline.sources.graph import delta
from entra_pipeline.sources.graph.errors import GraphError
from entra_pipeline.transform import lists, values
from entra_pipeline.warehouse import graph_staging, raw_tables
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.connection import connect, transaction

STAGE = s.RAW_GRAPH_USERS
USER = "#microsoft.graph.user"


def user(uid: str, **props) -> dict:
    return {"id": uid, "userPrincipalName": f"{uid}@contoso.test", "mail": f"{uid}@contoso.test", **props}


def manager(mid: str, removed: bool = False) -> dict:
    link = {"@odata.type": USER, "id": mid}
    return {"manager@delta": [{**link, "@removed": {"reason": "changed"}} if removed else link]}


PAGES = [
    [user("u1", displayName="One", **manager("u2")), user("u2", displayName="Two"),
     user("u3", displayName="x" * 300), user("u4", displayName="Four", **manager("c9"))],
    [user("u5", displayName="Five"), {"id": "u1", "displayName": "One again"},
     {"id": "u4", "@removed": {"reason": "changed"}}],
    [{"id": "u5", "jobTitle": "Chef", **manager("u1")}, {"id": "u1", **manager("u2", removed=True)},
     user("u6", displayName="Six", **manager("u4"))],
]


@pytest.fixture
def warehouse(tmp_path):
    con = connect(tmp_path / "warehouse.duckdb")
    yield con
    con.close()


def staged_round(pages: list[list[dict]], staged: graph_staging.Staged | None = None) -> graph_staging.Staged:
    """``pages`` staged as a read stages them (users with managers, unless ``staged`` says otherwise)."""
    staged = staged or graph_staging.StagedUsers(STAGE, True)
    for page in pages:
        staged.add(page)
    staged.finish()
    return staged


def apply(con, staged: graph_staging.Staged) -> raw_tables.RawChange:
    """The staged round applied to the warehouse and closed, as its stage applies and closes it."""
    groups = isinstance(staged, graph_staging.StagedGroups)
    try:
        with graph_staging.attached(con, staged), transaction(con):
            return (graph_staging.apply_staged_groups if groups else graph_staging.apply_staged_users)(
                con, "t", "run", staged)
    finally:
        staged.close()


def stored(con) -> dict[str, dict]:
    return {uid: json.loads(data) for uid, data in con.execute(
        f'SELECT id, data FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ?', ["t"]).fetchall()}


def test_a_staged_round_stores_each_user_as_its_items_applied_in_order(warehouse):
    staged = staged_round(PAGES)
    change = apply(warehouse, staged)
    assert stored(warehouse) == {
        "u1": {"id": "u1", "userPrincipalName": "u1@contoso.test", "mail": "u1@contoso.test",
               "displayName": "One again"},  # its manager link was removed on a later page
        "u2": {"id": "u2", "userPrincipalName": "u2@contoso.test", "mail": "u2@contoso.test", "displayName": "Two"},
        "u3": {"id": "u3", "userPrincipalName": "u3@contoso.test", "mail": "u3@contoso.test", "displayName": None},
        "u5": {"id": "u5", "userPrincipalName": "u5@contoso.test", "mail": "u5@contoso.test", "displayName": "Five",
               "jobTitle": "Chef", "manager": {"id": "u1", "mail": "u1@contoso.test"}},
        # u4 was removed: its report's manager has no mail (as for a manager who is not a user).
        "u6": {"id": "u6", "userPrincipalName": "u6@contoso.test", "mail": "u6@contoso.test", "displayName": "Six",
               "manager": {"id": "u4"}},
    }
    assert (change.added, change.updated, change.removed, change.total) == (5, 0, 0, 5)
    assert change.changed_ids == {"u1", "u2", "u3", "u5", "u6"}
    assert [(i.record, i.field, i.code) for i in staged.issues] == [("u3", "displayName", values.VALUE_TOO_LONG)]
    assert warehouse.execute(f'SELECT user_principal_name, display_name FROM "{s.RAW_GRAPH_USERS}" '
                             "WHERE id = 'u5'").fetchone() == ("u5@contoso.test", "Five")


def stored_both_ways(tmp_path, in_memory, staged: graph_staging.Staged, read):
    """What ``read`` finds after a round is applied in memory onto an empty warehouse, as a round
    of changes is (``in_memory(con)``), and after the same round ``staged`` is applied."""
    def in_transaction(con):
        with transaction(con):
            in_memory(con)

    found = []
    for name, write in (("memory", in_transaction), ("staged", lambda con: apply(con, staged))):
        con = connect(tmp_path / f"{name}.duckdb")
        write(con)
        found.append(read(con))
        con.close()
    return found


def test_a_staged_round_and_the_same_round_in_memory_store_the_same_users(tmp_path):
    checked = values.check_users([item for page in PAGES for item in page], STAGE, track=False)

    def in_memory(con):
        users = raw_tables.with_manager_mail(con, "t", delta.apply_users({}, checked.items))
        raw_tables.apply_raw_users(con, "t", "run", users)

    memory, staged = stored_both_ways(tmp_path, in_memory, staged_round(PAGES), stored)
    assert staged == memory and len(memory) == 5


def test_counts_compare_users_not_their_text_and_a_user_gone_is_removed(warehouse):
    with transaction(warehouse):
        # Stored with its keys in another order, and one user the round no longer has.
        raw_tables.write_raw_users(warehouse, "t", "before", [
            {"mail": "u2@contoso.test", "displayName": "Two", "userPrincipalName": "u2@contoso.test", "id": "u2"},
            user("u1", displayName="Old"), user("u0")])
    staged = staged_round([[user("u1", displayName="New"), user("u2", displayName="Two"), user("u7")]])
    change = apply(warehouse, staged)
    assert (change.added, change.updated, change.removed, change.total) == (1, 1, 1, 3)
    assert change.changed_ids == {"u7", "u1", "u0"}
    assert sorted(stored(warehouse)) == ["u1", "u2", "u7"]


def test_closing_a_round_midway_drops_the_queued_pages_and_removes_the_scratch_file():
    # What a failed read does: pages may still wait for the staging thread.
    staged = graph_staging.StagedUsers(STAGE, False)
    for n in range(graph_staging.QUEUE_PAGES * 3):
        staged.add([user(f"u{n}")])
    assert os.path.exists(staged.path)
    staged.close()
    assert not staged._worker.is_alive()
    assert not os.path.exists(os.path.dirname(staged.path))


def member(mid: str, kind: str = "user", removed: bool = False) -> dict:
    link = {"@odata.type": f"#microsoft.graph.{kind}", "id": mid}
    return {**link, "@removed": {"reason": "deleted"}} if removed else link


def group(gid: str, members: list[dict] | None = None, **props) -> dict:
    return {"id": gid, **props, **({"members@delta": members} if members is not None else {})}


GROUP_PAGES = [
    [group("g1", [member("u1"), member("u2")], displayName="Sales", mailEnabled=True, securityEnabled=False,
           groupTypes=[], mail="sales@contoso.test"),
     group("g2", [member("u1"), member("g1", "group")], displayName="All", mailEnabled=False, securityEnabled=True),
     group("g3", [member("u3")], displayName="Gone soon", groupTypes=["Unified"], mailEnabled=True)],
    # g1's members continue on the next page; g3 is removed and comes back with one member.
    [group("g1", [member("u3"), member("u2", removed=True), member("c1", "orgContact")]),
     {"id": "g3", "@removed": {"reason": "changed"}},
     group("g4", [member("u9")], displayName="x" * 300)],
    [group("g3", [member("u4")], displayName="Back"), group("g1", [member("u2")], description="Team")],
]


def staged_groups(pages: list[list[dict]]) -> graph_staging.Staged:
    return staged_round(pages, graph_staging.StagedGroups(s.RAW_GRAPH_GROUPS))


def stored_groups(con) -> tuple[dict, set]:
    groups = {gid: (kind, json.loads(data)) for gid, kind, data in con.execute(
        f'SELECT id, kind, data FROM "{s.RAW_GRAPH_GROUPS}" WHERE integration = ?', ["t"]).fetchall()}
    members = set(con.execute(f'SELECT group_id, member_id, member_type FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" '
                              "WHERE integration = ?", ["t"]).fetchall())
    return groups, members


def test_a_staged_group_round_stores_groups_and_members_as_applied_in_order(warehouse):
    staged = staged_groups(GROUP_PAGES)
    change = apply(warehouse, staged)
    groups, members = stored_groups(warehouse)
    assert groups == {
        "g1": ("distribution", {"id": "g1", "displayName": "Sales", "mailEnabled": True, "securityEnabled": False,
                                "groupTypes": [], "mail": "sales@contoso.test", "description": "Team"}),
        "g2": ("security", {"id": "g2", "displayName": "All", "mailEnabled": False, "securityEnabled": True}),
        "g3": ("security", {"id": "g3", "displayName": "Back"}),  # removed, then back with nothing before
        "g4": ("security", {"id": "g4", "displayName": None}),
    }
    assert members == {("g1", "u1", "user"), ("g1", "u2", "user"), ("g1", "u3", "user"), ("g1", "c1", "orgContact"),
                       ("g2", "u1", "user"), ("g2", "g1", "group"), ("g3", "u4", "user"), ("g4", "u9", "user")}
    assert (change.added, change.updated, change.removed, change.total) == (4, 0, 0, 4)
    assert (change.memberships_added, change.memberships_removed) == (8, 0)
    assert [(i.record, i.field, i.code) for i in staged.issues] == [("g4", "displayName", values.VALUE_TOO_LONG)]


def test_a_staged_group_round_and_the_same_round_in_memory_store_the_same(tmp_path):
    checked = values.check_groups([item for page in GROUP_PAGES for item in page], s.RAW_GRAPH_GROUPS, track=False)
    groups, members = delta.apply_groups({}, checked.items)
    kinds = {gid: lists.group_kind(g) for gid, g in groups.items() if g is not None}

    def in_memory(con):
        raw_tables.apply_raw_groups(con, "t", "run", groups, members, kinds)

    memory, staged = stored_both_ways(tmp_path, in_memory, staged_groups(GROUP_PAGES), stored_groups)
    assert staged == memory and (len(memory[0]), len(memory[1])) == (4, 8)


def test_a_second_staged_group_round_counts_what_it_changed(warehouse):
    first = staged_groups(GROUP_PAGES)
    apply(warehouse, first)
    second = staged_groups([[group("g1", [member("u1"), member("u5")], displayName="Sales", mailEnabled=True,
                                   securityEnabled=False, groupTypes=[], mail="sales@contoso.test",
                                   description="Team"),
                             group("g2", [member("u1")], displayName="Everyone", mailEnabled=False,
                                   securityEnabled=True)]])
    change = apply(warehouse, second)
    assert (change.added, change.updated, change.removed, change.total) == (0, 1, 2, 2)
    assert change.changed_ids == {"g2", "g3", "g4"}
    # Before: 8 memberships; now g1: u1, u5 and g2: u1.
    assert (change.memberships_added, change.memberships_removed) == (1, 6)
    assert stored_groups(warehouse)[1] == {("g1", "u1", "user"), ("g1", "u5", "user"), ("g2", "u1", "user")}


def test_a_member_without_a_graph_type_fails_the_round_with_one_line():
    # Pages are staged on their own thread: the failure reaches the reader at its next page, or
    # when the round ends.
    staged = graph_staging.StagedGroups(s.RAW_GRAPH_GROUPS)
    try:
        staged.add([group("g1", [{"@odata.type": "user", "id": "u1"}], displayName="G")])
        with pytest.raises(GraphError, match="member 'u1' has no usable @odata.type: 'user'"):
            staged.finish()
        staged._worker.join()
        with pytest.raises(GraphError, match="member 'u1' has no usable @odata.type: 'user'"):
            staged.add([group("g2", [], displayName="G2")])
    finally:
        staged.close()
    assert not os.path.exists(os.path.dirname(staged.path))

