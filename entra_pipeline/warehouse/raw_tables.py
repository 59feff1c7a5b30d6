"""The raw Graph tables: directory users, groups and direct memberships as Microsoft Graph
returned them, written whole (read: list, a full delta round) or patched by an incremental delta
round, with the deltaLink where the next round starts. Also what the list stage reads from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

import orjson
import pandas as pd

from entra_pipeline.transform.fields import WORKDAY
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.table_rows import (count_rows, delete_ids, id_table, insert_rows, replace_rows,
                                                 run_frame, stored_json, utc_now)

_USER_COLUMNS = ["id", "user_principal_name", "display_name", "mail", "data"]
_GROUP_COLUMNS = ["id", "display_name", "mail", "kind", "mail_enabled", "security_enabled", "group_types", "data"]
_EDGE_COLUMNS = ["group_id", "member_id", "member_type"]


def to_json(value: dict) -> str:
    """A raw object as stored. orjson, ten times the standard library's speed, writes every value
    the limits let through (transform.values: no NaN or infinite number); an integer beyond 64
    bits, which it refuses, goes through the standard library."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False)


def from_json(text: str) -> dict:
    """A raw object as stored, parsed (orjson; an integer beyond 64 bits through the standard library)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _user_frame(integration: str, run_id: str, users: Iterable[dict]) -> pd.DataFrame:
    rows = [
        {"id": u["id"], "user_principal_name": u.get("userPrincipalName"), "display_name": u.get("displayName"),
         "mail": u.get("mail"), "data": to_json(u)}
        for u in users
    ]
    return run_frame(rows, _USER_COLUMNS, integration, run_id)


def _group_frame(integration: str, run_id: str, groups: Iterable[dict], kinds: dict[str, str]) -> pd.DataFrame:
    rows = [
        {"id": g["id"], "display_name": g.get("displayName"), "mail": g.get("mail"), "kind": kinds[g["id"]],
         "mail_enabled": g.get("mailEnabled"), "security_enabled": g.get("securityEnabled"),
         "group_types": list(g.get("groupTypes") or []), "data": to_json(g)}
        for g in groups
    ]
    return run_frame(rows, _GROUP_COLUMNS, integration, run_id)


def _edge_frame(integration: str, run_id: str, edges: dict[str, list[tuple[str, str]]]) -> pd.DataFrame:
    columns = {"group_id": [], "member_id": [], "member_type": []}
    for group_id, members in edges.items():
        for member_type, member_id in members:
            columns["group_id"].append(group_id)
            columns["member_id"].append(member_id)
            columns["member_type"].append(member_type)
    return run_frame(columns, _EDGE_COLUMNS, integration, run_id)


def write_raw_users(con, integration: str, run_id: str, users: list[dict]) -> int:
    """Replace an integration's users with ``users`` (a full read); the rows written."""
    return replace_rows(con, s.RAW_GRAPH_USERS, integration, _user_frame(integration, run_id, users))


def write_raw_groups(con, integration: str, run_id: str, groups: list[dict], kinds: dict[str, str],
                     edges: dict[str, list[tuple[str, str]]]) -> tuple[int, int]:
    """Replace an integration's groups and direct memberships (a full read); (groups, memberships)."""
    n_groups = replace_rows(con, s.RAW_GRAPH_GROUPS, integration, _group_frame(integration, run_id, groups, kinds))
    n_members = replace_rows(con, s.RAW_GRAPH_GROUP_MEMBERS, integration, _edge_frame(integration, run_id, edges))
    return n_groups, n_members


# -- raw, from delta rounds ---------------------------------------------------------------------

@dataclass
class RawChange:
    """What applying one delta round changed in a raw table (compared with the stored rows)."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    total: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    changed_ids: set[str] = field(default_factory=set)  # added, updated or removed
    #: Groups whose shape changed (properties, added, removed, non-user members) and users whose
    #: direct memberships changed: what an incremental distribution_lists needs. None: anything.
    structure_changed: set[str] | None = None
    users_moved: set[str] | None = None


def _compare(before: dict[str, dict], after: dict[str, dict | None]) -> RawChange:
    change = RawChange()
    for oid, new in after.items():
        old = before.get(oid)
        if new is None:
            if old is not None:
                change.removed += 1
                change.changed_ids.add(oid)
        elif old is None:
            change.added += 1
            change.changed_ids.add(oid)
        elif old != new:
            change.updated += 1
            change.changed_ids.add(oid)
    return change


def replace_compared(con, table: str, integration: str, run_id: str, source: str, columns: list[str]) -> RawChange:
    """Replace an integration's rows of a raw table with ``source`` (a staged table or a temp
    table: an id, ``data`` and the other ``columns``), compared with the stored rows by id and
    ``data`` for the change counts and the change log."""
    change = RawChange()
    added = [r[0] for r in con.execute(
        f'SELECT id FROM {source} WHERE id NOT IN (SELECT id FROM "{table}" WHERE integration = ?)',
        [integration]).fetchall()]
    removed = [r[0] for r in con.execute(
        f'SELECT id FROM "{table}" WHERE integration = ? AND id NOT IN (SELECT id FROM {source})',
        [integration]).fetchall()]
    # Equal text is an equal object; unequal text may still be one (keys in another order): parsed to be sure.
    updated = [oid for oid, old, new in con.execute(
        f'SELECT n.id, r.data, n.data FROM {source} n JOIN "{table}" r ON r.integration = ? AND r.id = n.id '
        "WHERE CAST(r.data AS VARCHAR) <> n.data", [integration]).fetchall() if from_json(old) != from_json(new)]
    change.added, change.removed, change.updated = len(added), len(removed), len(updated)
    change.changed_ids.update(added, removed, updated)
    listed = ", ".join(columns)
    con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])
    con.execute(f'INSERT INTO "{table}" (integration, {listed}, run_id, synced_at) SELECT ?, {listed}, ?, ? '
                f"FROM {source}", [integration, run_id, utc_now()])
    change.total = count_rows(con, table, integration)
    return change


def apply_raw_users(con, integration: str, run_id: str, users: dict[str, dict | None]) -> RawChange:
    """Write the users a round of changes touched (``users``: id -> user now, None if removed; see
    graph.delta.apply_users; a full round is staged instead, see graph_staging). Counts compare
    with the rows stored before."""
    ids = list(users)
    change = _compare(stored_json(con, s.RAW_GRAPH_USERS, integration, ids), users)
    delete_ids(con, s.RAW_GRAPH_USERS, integration, "id", ids)
    insert_rows(con, s.RAW_GRAPH_USERS, _user_frame(integration, run_id, (u for u in users.values() if u)))
    change.total = count_rows(con, s.RAW_GRAPH_USERS, integration)
    return change


def drop_other_source(con, integration: str, kind: str) -> None:
    """An integration that changed source type keeps no rows of the other type's raw tables: they
    would still feed its lists and mapping bookkeeping."""
    other = ((s.RAW_GRAPH_USERS, s.RAW_GRAPH_GROUPS, s.RAW_GRAPH_GROUP_MEMBERS, s.DELTA_STATE) if kind == WORKDAY
             else (s.RAW_WORKDAY_WORKERS,))
    for table in other:
        con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])


def with_manager_mail(con, integration: str, users: dict[str, dict | None]) -> dict[str, dict | None]:
    """Give each user's ``manager`` the manager's mail, as ``$expand=manager`` would: delta names
    the manager by id only. ``users`` are the users a round of changes touched; returned with the
    untouched users whose manager's mail the round changed (or whose manager it removed), so they
    are rewritten too. A manager who is not a user of the tenant (an orgContact) has no mail here."""
    mails = {uid: (u or {}).get("mail") for uid, u in users.items()}
    wanted = {(u.get("manager") or {}).get("id") for u in users.values() if u} - set(users) - {None}
    id_table(con, "_managers", wanted)
    mails.update(con.execute(f'SELECT id, mail FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ? '
                             "AND id IN (SELECT id FROM _managers)", [integration]).fetchall())
    # Reports of a touched user whose mail changed or who left keep the manager's mail current.
    id_table(con, "_touched", users)
    for uid, data in con.execute(
            f'SELECT id, data FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ? '
            "AND id NOT IN (SELECT id FROM _touched) "
            "AND json_extract_string(data, '$.manager.id') IN (SELECT id FROM _touched)",
            [integration]).fetchall():
        report = json.loads(data)
        if report["manager"].get("mail") != mails.get(report["manager"]["id"]):
            users[uid] = report
    for user in users.values():
        manager = (user or {}).get("manager")
        if manager:
            mail = mails.get(manager["id"])
            # No mail, no key: as a full round staged in DuckDB writes it (graph_staging).
            user["manager"] = {"id": manager["id"]} if mail is None else {"id": manager["id"], "mail": mail}
    return users


def apply_raw_groups(con, integration: str, run_id: str, groups: dict[str, dict | None],
                     members: dict[str, dict[str, str | None]], kinds: dict[str, str]) -> RawChange:
    """Write the groups a round of changes touched and its membership changes (see
    graph.delta.apply_groups; a full round is staged instead, see graph_staging): single
    memberships are deleted and inserted (replays are harmless)."""
    change = _compare(stored_json(con, s.RAW_GRAPH_GROUPS, integration, list(groups)), groups)
    kept = {gid: g for gid, g in groups.items() if g is not None}
    gone = [gid for gid, g in groups.items() if g is None]
    ops = [(gid, m, t) for gid, links in members.items() if gid in kept for m, t in links.items()]
    con.execute("CREATE OR REPLACE TEMP TABLE _member_ops AS SELECT unnest(?::VARCHAR[]) AS group_id, "
                "unnest(?::VARCHAR[]) AS member_id, unnest(?::VARCHAR[]) AS member_type",
                [[o[0] for o in ops], [o[1] for o in ops], [o[2] for o in ops]])
    id_table(con, "_gone_groups", gone)
    edges = f'"{s.RAW_GRAPH_GROUP_MEMBERS}"'
    change.memberships_added, change.memberships_removed = con.execute(f"""
        SELECT count(*) FILTER (WHERE o.member_type IS NOT NULL AND e.group_id IS NULL),
               count(*) FILTER (WHERE o.member_type IS NULL AND e.group_id IS NOT NULL)
        FROM _member_ops o LEFT JOIN {edges} e
          ON e.integration = ? AND e.group_id = o.group_id AND e.member_id = o.member_id""",
                                                                       [integration]).fetchone()
    moved = con.execute(f"""
        SELECT o.group_id, o.member_id, coalesce(o.member_type, e.member_type) AS member_type
        FROM _member_ops o LEFT JOIN {edges} e
          ON e.integration = ? AND e.group_id = o.group_id AND e.member_id = o.member_id
        UNION ALL SELECT group_id, member_id, 'group' FROM {edges}
        WHERE integration = ? AND member_id IN (SELECT id FROM _gone_groups)""",
                        [integration, integration]).fetchall()
    change.users_moved = {m for _, m, t in moved if t == "user"}
    change.structure_changed = set(change.changed_ids) | {g for g, _, t in moved if t != "user"}
    # A removed group loses its members and is no longer a member of any other group.
    change.memberships_removed += con.execute(
        f"DELETE FROM {edges} WHERE integration = ? AND (group_id IN (SELECT id FROM _gone_groups) "
        "OR member_id IN (SELECT id FROM _gone_groups))", [integration]).fetchone()[0]
    con.execute(f"DELETE FROM {edges} e WHERE integration = ? AND EXISTS (SELECT 1 FROM _member_ops o "
                "WHERE o.group_id = e.group_id AND o.member_id = e.member_id)", [integration])
    con.execute(f"INSERT INTO {edges} SELECT ?, group_id, member_id, member_type, ?, ? FROM _member_ops "
                "WHERE member_type IS NOT NULL", [integration, run_id, utc_now()])
    delete_ids(con, s.RAW_GRAPH_GROUPS, integration, "id", groups)
    insert_rows(con, s.RAW_GRAPH_GROUPS, _group_frame(integration, run_id, kept.values(), kinds))
    change.total = count_rows(con, s.RAW_GRAPH_GROUPS, integration)
    return change


def stored_groups(con, integration: str, group_ids: list[str]) -> dict[str, dict]:
    """The stored JSON of some groups (what a delta round patches)."""
    return stored_json(con, s.RAW_GRAPH_GROUPS, integration, group_ids)


def stored_users(con, integration: str, user_ids: list[str]) -> dict[str, dict]:
    """The stored JSON of some users (what a delta round patches)."""
    return stored_json(con, s.RAW_GRAPH_USERS, integration, user_ids)


# -- delta state ---------------------------------------------------------------------------------

@dataclass
class DeltaState:
    """Where the next incremental read starts: Graph's deltaLink, the properties its round
    selected (others need a full round), and when the last full round ran."""

    delta_link: str
    fields: list[str]
    full_round_at: datetime


def delta_state(con, integration: str, resource: str) -> DeltaState | None:
    """Where the next incremental read of ``users`` or ``groups`` starts, if anywhere."""
    s.ensure_schema(con)
    row = con.execute(f'SELECT delta_link, fields, full_round_at FROM "{s.DELTA_STATE}" '
                      "WHERE integration = ? AND resource = ?", [integration, resource]).fetchone()
    return DeltaState(row[0], list(row[1]), row[2]) if row else None


def write_delta_state(con, integration: str, resource: str, run_id: str, delta_link: str | None,
                      fields: list[str], full_round_at: datetime | None) -> None:
    """Store the next round's start (None: forget it, so the next read is a full round)."""
    con.execute(f'DELETE FROM "{s.DELTA_STATE}" WHERE integration = ? AND resource = ?', [integration, resource])
    if delta_link is not None:
        con.execute(f'INSERT INTO "{s.DELTA_STATE}" VALUES (?, ?, ?, ?, ?, ?, ?)',
                    [integration, resource, delta_link, sorted(fields), full_round_at or utc_now(), run_id, utc_now()])


# -- what the list stage reads -------------------------------------------------------------------

def read_groups(con, integration: str) -> list[dict]:
    """Every group's Graph JSON, by display name."""
    return [json.loads(r[0]) for r in con.execute(
        f'SELECT data FROM "{s.RAW_GRAPH_GROUPS}" WHERE integration = ? ORDER BY display_name, id',
        [integration]).fetchall()]


def read_edges(con, integration: str, group_ids: Iterable[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """group id -> its direct members as (member type, object id); only ``group_ids``, if given."""
    only = ""
    if group_ids is not None:
        id_table(con, "_edge_groups", group_ids)
        only = " AND group_id IN (SELECT id FROM _edge_groups)"
    edges: dict[str, list[tuple[str, str]]] = {}
    for group_id, member_type, member_id in con.execute(
            f'SELECT group_id, member_type, member_id FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ?{only}',
            [integration]).fetchall():
        edges.setdefault(group_id, []).append((member_type, member_id))
    return edges


def group_parents(con, integration: str) -> dict[str, set[str]]:
    """Nested group id -> the groups it is a direct member of."""
    parents: dict[str, set[str]] = {}
    for parent, child in con.execute(f'SELECT group_id, member_id FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" '
                                     "WHERE integration = ? AND member_type = 'group'", [integration]).fetchall():
        parents.setdefault(child, set()).add(parent)
    return parents


def user_groups(con, integration: str, user_ids: Iterable[str]) -> dict[str, set[str]]:
    """User id -> the groups it is a direct member of."""
    id_table(con, "_member_users", user_ids)
    groups: dict[str, set[str]] = {}
    for group_id, member_id in con.execute(
            f'SELECT group_id, member_id FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ? '
            "AND member_id IN (SELECT id FROM _member_users)", [integration]).fetchall():
        groups.setdefault(member_id, set()).add(group_id)
    return groups


def direct_member_counts(con, integration: str) -> dict[str, int]:
    """Group id -> how many direct members it has (of any type)."""
    return dict(con.execute(f'SELECT group_id, count(*) FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ? '
                            "GROUP BY group_id", [integration]).fetchall())

