"""The selected groups resolved to lists inside DuckDB (a full distribution_lists run) on a real
DuckDB file: exactly the lists, members and non-members of the rule in transform.lists, through
nesting and a cycle, with every reason a user is not on a list; and what replacing the stored
memberships would add and remove."""

from __future__ import annotations

import json

import pytest

from entra_pipeline.transform import lists, mapping
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.guard import assess
from entra_pipeline.warehouse import import_errors, list_resolution, raw_tables
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.connection import connect, transaction
from tests.support.groups import CONTACTS, EDGES, GROUPS, resolve

KEY = "t"


@pytest.fixture
def con(tmp_path):
    """A warehouse holding the small directory: its memberships, contacts and who is not one."""
    con = connect(tmp_path / "warehouse.duckdb")
    with transaction(con):
        rows = [(gid, t, m) for gid, links in EDGES.items() for t, m in links]
        con.execute(f'INSERT INTO "{s.RAW_GRAPH_GROUP_MEMBERS}" SELECT ?, unnest(?::VARCHAR[]), '
                    "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), 'run', now()",
                    [KEY, [r[0] for r in rows], [r[2] for r in rows], [r[1] for r in rows]])
        for user, contact in CONTACTS.contacts.items():
            con.execute(f'INSERT INTO "{s.CONTACTS}" (integration, contact_id, source_id, run_id, synced_at) '
                        "VALUES (?, ?, ?, 'run', now())", [KEY, contact, user])
        for user, rule in CONTACTS.excluded.items():
            con.execute(f'INSERT INTO "{s.EXCLUDED_CONTACTS}" VALUES (?, ?, ?, ?, \'run\', now())',
                        [KEY, f"{user}@x", user, rule])
        import_errors.replace_issues(con, KEY, mapping.STAGE, "run", [
            ImportIssue(mapping.STAGE, u, "employeeId", mapping.DUPLICATE_UNIQUE_ID, "taken") for u in CONTACTS.duplicates])
        raw_tables.write_raw_users(con, KEY, "run", [{"id": u} for u in sorted(CONTACTS.read)])
    yield con
    con.close()


def resolved(con) -> tuple[list[dict], set, set]:
    selected, _ = lists.select_groups(GROUPS, "all", (), ())
    rows = list_resolution.resolve(con, KEY, selected)
    members = set(con.execute(f"SELECT * FROM {list_resolution.MEMBERS}").fetchall())
    non_members = set(con.execute(f"SELECT * FROM {list_resolution.NON_MEMBERS}").fetchall())
    return rows, members, non_members


def test_lists_resolved_in_duckdb_are_the_rule_s_lists(con):
    expected, _ = resolve("all")
    rows, members, non_members = resolved(con)
    assert rows == expected.lists
    assert members == set(expected.members)
    assert non_members == set(expected.non_members)
    g2 = next(r for r in rows if r["list_id"] == "g2")
    assert (g2["member_count"], g2["users_not_contacts"], g2["nested_groups"], g2["non_user_member_types"]) == (
        3, 4, 2, {"device": 1, "orgContact": 1})


def test_writing_replaces_the_lists_and_counts_what_changed(con):
    rows, members, non_members = resolved(con)
    with transaction(con):
        list_resolution.write(con, KEY, "run", rows, [("c1", "u1", "user", "custom reason")])
    stored = set(con.execute(f'SELECT list_id, contact_id FROM "{s.DISTRIBUTION_LIST_MEMBERS}"').fetchall())
    assert stored == members
    assert set(con.execute(f'SELECT list_id, object_id, object_type, reason FROM "{s.DISTRIBUTION_LIST_NON_MEMBERS}"')
               .fetchall()) == non_members | {("c1", "u1", "user", "custom reason")}
    assert json.loads(con.execute(f'SELECT non_user_member_types FROM "{s.DISTRIBUTION_LISTS}" '
                                  "WHERE list_id = 'g2'").fetchone()[0]) == {"device": 1, "orgContact": 1}
    # u1 leaves g1 and u3's contact is now on g1 too: one membership removed, one added.
    con.execute(f'DELETE FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE group_id = \'g1\' AND member_id = \'u1\'')
    con.execute(f'INSERT INTO "{s.RAW_GRAPH_GROUP_MEMBERS}" VALUES (?, \'g1\', \'u3\', \'user\', \'run\', now())', [KEY])
    _, after, _ = resolved(con)
    size, added, removed, sample = list_resolution.compare(con, KEY, 20)
    expected = assess(stored, after, None, None)
    assert (size, added, removed, sample) == (len(stored), 1, 1, [("g1", "a@x")])
    assert (expected.current, expected.removed, expected.sample) == (size, removed, sample)
