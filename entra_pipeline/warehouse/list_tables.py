"""The list tables: distribution_lists, their members (contacts), their non-members (who is in
the group but not on the list, and why), and available_groups (what can be selected as a list).
"""

from __future__ import annotations

import json
from typing import Iterable

from entra_pipeline.transform import lists
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.table_rows import id_table, insert_rows, replace_rows, run_frame

#: distribution_lists columns the list stage fills (the recounted ones are updated from the rows).
LIST_COLUMNS = ["list_id", "source_group_id", "display_name", "mail", "kind", "member_count",
                "users_not_contacts", "users_excluded", "users_without_contact_id", "non_user_members",
                "non_user_member_types", "nested_groups"]


def insert_lists(con, integration: str, run_id: str, lists_: list[dict]) -> None:
    """Append distribution_lists rows (resolved lists, see transform.lists)."""
    rows = [{**l, "non_user_member_types": json.dumps(l["non_user_member_types"])} for l in lists_]
    insert_rows(con, s.DISTRIBUTION_LISTS, run_frame(rows, LIST_COLUMNS, integration, run_id))


def write_list_changes(con, integration: str, run_id: str, rebuilt: list[dict], drop: set[str],
                       contacts: set[str], users: set[str], members: set[tuple[str, str]],
                       non_members: set[tuple[str, str, str, str]]) -> None:
    """An incremental distribution_lists write. Lists in ``drop`` lose every row, ``rebuilt``
    lists (also in ``drop``) are written whole; in the other lists the rows of ``contacts``
    (members) and of ``users`` (non-members) are replaced by ``members`` / ``non_members``. Every
    list's counts are then recounted from its rows (nested and non-user counts only change with
    a rebuild)."""
    id_table(con, "_drop_lists", drop)
    id_table(con, "_changed_contacts", contacts)
    id_table(con, "_changed_users", users)
    for table in (s.DISTRIBUTION_LISTS, s.DISTRIBUTION_LIST_MEMBERS, s.DISTRIBUTION_LIST_NON_MEMBERS):
        con.execute(f'DELETE FROM "{table}" WHERE integration = ? AND list_id IN (SELECT id FROM _drop_lists)',
                    [integration])
    con.execute(f'DELETE FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ? '
                "AND contact_id IN (SELECT id FROM _changed_contacts)", [integration])
    con.execute(f'DELETE FROM "{s.DISTRIBUTION_LIST_NON_MEMBERS}" WHERE integration = ? AND object_type = ? '
                "AND object_id IN (SELECT id FROM _changed_users)", [integration, lists.USER])
    insert_lists(con, integration, run_id, rebuilt)
    pairs = sorted(members)
    insert_rows(con, s.DISTRIBUTION_LIST_MEMBERS, run_frame({"list_id": [p[0] for p in pairs], "contact_id": [p[1] for p in pairs]},
                                                     ["list_id", "contact_id"], integration, run_id))
    names = ["list_id", "object_id", "object_type", "reason"]
    rows_ = sorted(non_members)
    insert_rows(con, s.DISTRIBUTION_LIST_NON_MEMBERS, run_frame({n: [r[i] for r in rows_] for i, n in enumerate(names)},
                                                         names, integration, run_id))
    con.execute(f"""
        UPDATE "{s.DISTRIBUTION_LISTS}" AS l SET
            member_count = coalesce(m.n, 0), users_excluded = coalesce(x.excluded, 0),
            users_without_contact_id = coalesce(x.other, 0),
            users_not_contacts = coalesce(x.excluded, 0) + coalesce(x.other, 0)
        FROM (SELECT list_id FROM "{s.DISTRIBUTION_LISTS}" WHERE integration = ?) k
        LEFT JOIN (SELECT list_id, count(*) AS n FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ?
                   GROUP BY list_id) m USING (list_id)
        LEFT JOIN (SELECT list_id, count(*) FILTER (WHERE reason LIKE 'excluded:%') AS excluded,
                          count(*) FILTER (WHERE reason NOT LIKE 'excluded:%') AS other
                   FROM "{s.DISTRIBUTION_LIST_NON_MEMBERS}" WHERE integration = ? AND object_type = ?
                   GROUP BY list_id) x USING (list_id)
        WHERE l.integration = ? AND l.list_id = k.list_id""",
                [integration, integration, integration, lists.USER, integration])


def list_rows_of(con, integration: str, contacts: set[str], lists_: set[str]) -> set[tuple[str, str]]:
    """Current (list, contact) rows of ``contacts``, and every row of ``lists_``."""
    id_table(con, "_rows_contacts", contacts)
    id_table(con, "_rows_lists", lists_)
    return set(con.execute(
        f'SELECT list_id, contact_id FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ? '
        "AND (contact_id IN (SELECT id FROM _rows_contacts) OR list_id IN (SELECT id FROM _rows_lists))",
        [integration]).fetchall())


def write_available_groups(con, integration: str, run_id: str, rows: list[dict]) -> int:
    """Replace the groups an integration offers as distribution lists (see transform.lists)."""
    columns = ["group_id", "display_name", "mail", "kind", "direct_members", "selected", "same_name_groups"]
    return replace_rows(con, s.AVAILABLE_GROUPS, integration, run_frame(rows, columns, integration, run_id))


def previous_lists(con, integration: str) -> dict[str, str]:
    """List id -> display name of the integration's lists as last written."""
    return dict(con.execute(f'SELECT list_id, display_name FROM "{s.DISTRIBUTION_LISTS}" WHERE integration = ?',
                            [integration]).fetchall())


def memberships(con, integration: str) -> set[tuple[str, str]]:
    """Every (list, contact) membership of an integration: the deletion guard's "before"."""
    return set(con.execute(f'SELECT list_id, contact_id FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ?',
                           [integration]).fetchall())


def memberships_leaving(con, integration: str, kept: Iterable[str], source_ids: set[str] | None,
                        sample: int) -> tuple[int, int, list[tuple[str, str]]]:
    """What prune_list_members will take away once a contacts write keeps ``kept`` (contact ids)
    of the contacts of ``source_ids`` (None: of every contact): (memberships stored, how many go,
    the first ``sample`` by list and contact). The deletion guard weighs it before the write."""
    id_table(con, "_kept_contacts", kept)
    others = ""  # contacts the write leaves alone keep their memberships
    if source_ids is not None:
        id_table(con, "_leaving_sources", source_ids)
        others = (f'OR contact_id IN (SELECT contact_id FROM "{s.CONTACTS}" WHERE integration = ? '
                  "AND source_id NOT IN (SELECT id FROM _leaving_sources))")
    con.execute(f'CREATE OR REPLACE TEMP TABLE _leaving AS SELECT list_id, contact_id FROM '
                f'"{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ? AND NOT (contact_id IN '
                f"(SELECT id FROM _kept_contacts) {others})", [integration] * (2 if others else 1))
    size = con.execute(f'SELECT count(*) FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ?',
                       [integration]).fetchone()[0]
    removed = con.execute("SELECT count(*) FROM _leaving").fetchone()[0]
    first = con.execute("SELECT list_id, contact_id FROM _leaving ORDER BY list_id, contact_id LIMIT ?",
                        [sample]).fetchall()
    con.execute("DROP TABLE _leaving")
    return size, removed, [tuple(row) for row in first]


def prune_list_members(con, integration: str) -> int:
    """Drop list members that are no longer contacts, and recount the lists.

    Runs with every contacts write, so that an excluded or vanished person leaves every list at
    once, even when this run's distribution_lists step does not get to run.
    """
    removed = con.execute(
        f'DELETE FROM "{s.DISTRIBUTION_LIST_MEMBERS}" m WHERE m.integration = ? AND NOT EXISTS '
        f'(SELECT 1 FROM "{s.CONTACTS}" c WHERE c.integration = m.integration AND c.contact_id = m.contact_id)',
        [integration]).fetchone()[0]
    if removed:
        con.execute(
            f'UPDATE "{s.DISTRIBUTION_LISTS}" l SET member_count = (SELECT count(*) FROM '
            f'"{s.DISTRIBUTION_LIST_MEMBERS}" m WHERE m.integration = l.integration AND m.list_id = l.list_id) '
            "WHERE l.integration = ?", [integration])
    return removed
