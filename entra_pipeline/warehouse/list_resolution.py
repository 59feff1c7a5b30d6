"""Every selected group resolved to its list inside DuckDB (a full distribution_lists run): nested
groups flattened by a recursive query (cycle-safe: a group is reached once per list), users joined
with what the contact stages decided about them. The members and non-members stay in temporary
tables until ``write`` replaces the integration's list rows with them: millions of memberships
never become Python objects. The same rules as transform.lists.resolve_groups, which rebuilds
single lists on an incremental run; the tests compare the two table by table.
"""

from __future__ import annotations

from entra_pipeline.transform import lists, mapping
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.list_tables import insert_lists
from entra_pipeline.warehouse.table_rows import utc_now

MEMBERS = "_list_members_new"  # list_id, contact_id
NON_MEMBERS = "_list_non_members_new"  # list_id, object_id, object_type, reason


def resolve(con, integration: str, selected: list[dict]) -> list[dict]:
    """The lists of ``selected`` groups (distribution_lists rows, in their order); their members
    and non-members go to the temporary tables MEMBERS and NON_MEMBERS."""
    edges = f'"{s.RAW_GRAPH_GROUP_MEMBERS}"'
    con.execute("CREATE OR REPLACE TEMP TABLE _list_roots AS SELECT unnest(?::VARCHAR[]) AS root",
                [[g["id"] for g in selected]])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _list_reach AS
        WITH RECURSIVE reach(root, gid) AS (
            SELECT root, root FROM _list_roots
            UNION
            SELECT r.root, e.member_id FROM reach r JOIN {edges} e
              ON e.integration = ? AND e.group_id = r.gid AND e.member_type = ?)
        SELECT root, gid FROM reach""", [integration, lists.GROUP])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _list_reached AS
        SELECT DISTINCT r.root, e.member_id, e.member_type FROM _list_reach r JOIN {edges} e
          ON e.integration = ? AND e.group_id = r.gid AND e.member_type <> ?""", [integration, lists.GROUP])
    # Each user in a list's groups: its contact, or why it is none (the order of lists.why_not_member).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _list_people AS
        SELECT u.root, u.member_id AS user_id, c.contact_id,
               CASE WHEN c.contact_id IS NOT NULL THEN NULL
                    WHEN x.rule IS NOT NULL THEN ? || x.rule
                    WHEN d.record IS NOT NULL THEN ?
                    WHEN r.id IS NULL THEN ?
                    ELSE ? END AS reason
        FROM _list_reached u
        LEFT JOIN (SELECT source_id, any_value(contact_id) AS contact_id FROM "{s.CONTACTS}"
                   WHERE integration = ? GROUP BY source_id) c ON c.source_id = u.member_id
        LEFT JOIN (SELECT source_id, any_value(rule) AS rule FROM "{s.EXCLUDED_CONTACTS}"
                   WHERE integration = ? GROUP BY source_id) x ON x.source_id = u.member_id
        LEFT JOIN (SELECT DISTINCT record FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ? AND code = ?) d
          ON d.record = u.member_id
        LEFT JOIN (SELECT id FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ?
                   UNION SELECT id FROM "{s.RAW_WORKDAY_WORKERS}" WHERE integration = ?) r ON r.id = u.member_id
        WHERE u.member_type = ?""",
                [lists.EXCLUDED, lists.DUPLICATE_ID, lists.NOT_READ, lists.NO_CONTACT_ID, integration, integration,
                 integration, mapping.STAGE, mapping.DUPLICATE_UNIQUE_ID, integration, integration, lists.USER])
    # A member that is not a user counts once per list, whatever types it was linked with.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _list_others AS
        SELECT root, member_id, max(member_type) AS member_type FROM _list_reached WHERE member_type <> ?
        GROUP BY root, member_id""", [lists.USER])
    con.execute(f"CREATE OR REPLACE TEMP TABLE {MEMBERS} AS SELECT DISTINCT root AS list_id, contact_id "
                "FROM _list_people WHERE contact_id IS NOT NULL")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {NON_MEMBERS} AS
        SELECT root AS list_id, user_id AS object_id, ? AS object_type, reason FROM _list_people WHERE contact_id IS NULL
        UNION ALL
        SELECT root, member_id, member_type, ? || member_type || ? FROM _list_others""",
                [lists.USER, *lists.NOT_A_USER.split("{}")])
    counts = {root: (contacts, users, excluded) for root, contacts, users, excluded in con.execute("""
        SELECT root, count(DISTINCT contact_id), count(*) FILTER (WHERE contact_id IS NULL),
               count(*) FILTER (WHERE starts_with(reason, ?)) FROM _list_people GROUP BY root""",
                                                                                     [lists.EXCLUDED]).fetchall()}
    nested = dict(con.execute("SELECT root, count(*) - 1 FROM _list_reach GROUP BY root").fetchall())
    types: dict[str, dict[str, int]] = {}
    for root, kind, n in con.execute("SELECT root, member_type, count(*) FROM _list_others GROUP BY ALL "
                                     "ORDER BY root, member_type").fetchall():
        types.setdefault(root, {})[kind] = n
    rows = []
    for group in selected:
        gid = group["id"]
        contacts, users, excluded = counts.get(gid, (0, 0, 0))
        rows.append({"list_id": gid, "source_group_id": gid, "display_name": group.get("displayName"),
                     "mail": (group.get("mail") or "").lower() or None, "kind": lists.group_kind(group),
                     "member_count": contacts, "users_not_contacts": users, "users_excluded": excluded,
                     "users_without_contact_id": users - excluded,
                     "non_user_members": sum(types.get(gid, {}).values()),
                     "non_user_member_types": types.get(gid, {}), "nested_groups": nested.get(gid, 0)})
    return rows


def add_members(con, members: list[tuple[str, str]]) -> None:
    """Members of lists resolved elsewhere (custom and generated lists)."""
    con.execute(f"INSERT INTO {MEMBERS} SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[])",
                [[m[0] for m in members], [m[1] for m in members]])


def compare(con, integration: str, sample: int) -> tuple[int, int, int, list[tuple[str, str]]]:
    """(memberships stored, added, removed, the first ``sample`` removed by list and contact)."""
    stored = f'SELECT list_id, contact_id FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ?'
    size, added, removed = con.execute(f"""
        SELECT (SELECT count(*) FROM ({stored})),
               (SELECT count(*) FROM (SELECT list_id, contact_id FROM {MEMBERS} EXCEPT {stored})),
               (SELECT count(*) FROM ({stored} EXCEPT SELECT list_id, contact_id FROM {MEMBERS}))""",
                                       [integration] * 3).fetchone()
    gone = con.execute(f"SELECT * FROM ({stored} EXCEPT SELECT list_id, contact_id FROM {MEMBERS}) "
                       "ORDER BY list_id, contact_id LIMIT ?", [integration, sample]).fetchall()
    return size, added, removed, [tuple(g) for g in gone]


def write(con, integration: str, run_id: str, rows: list[dict], non_members: list[tuple[str, str, str, str]]) -> None:
    """Replace an integration's lists with ``rows``, their members with MEMBERS and their
    non-members with NON_MEMBERS plus ``non_members`` (of lists resolved elsewhere)."""
    for table in (s.DISTRIBUTION_LISTS, s.DISTRIBUTION_LIST_MEMBERS, s.DISTRIBUTION_LIST_NON_MEMBERS):
        con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])
    insert_lists(con, integration, run_id, rows)
    now = utc_now()
    con.execute(f'INSERT INTO "{s.DISTRIBUTION_LIST_MEMBERS}" (integration, list_id, contact_id, run_id, synced_at) '
                f"SELECT ?, list_id, contact_id, ?, ? FROM {MEMBERS}", [integration, run_id, now])
    con.execute(f'INSERT INTO "{s.DISTRIBUTION_LIST_NON_MEMBERS}" (integration, list_id, object_id, object_type, '
                f"reason, run_id, synced_at) SELECT ?, list_id, object_id, object_type, reason, ?, ? FROM ("
                f"SELECT * FROM {NON_MEMBERS} UNION ALL SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]))",
                [integration, run_id, now, *([r[i] for r in non_members] for i in range(4))])
