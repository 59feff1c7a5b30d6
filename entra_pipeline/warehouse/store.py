"""Reading and writing the contact warehouse (DuckDB). No Dagster here.

Each stage's ``write_*`` replaces that stage's rows for one integration, together with the stage's
import errors, inside the caller's transaction (see ``transaction``): either all of a stage's
output for an integration changes, or none of it does.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator

import pandas as pd

from entra_pipeline.transform import lists, mapping, values
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import ENTRA, WORKDAY
from entra_pipeline.warehouse import schema as s


_IN_TRANSACTION: set[int] = set()  # id() of connections inside transaction()


@contextmanager
def transaction(con) -> Iterator:
    """BEGIN ... COMMIT, or ROLLBACK on any exception (including KeyboardInterrupt).

    Inside another ``transaction`` or ``rolled_back`` on the same connection it joins the outer
    one (the preview runs every stage's write inside ``rolled_back``)."""
    if id(con) in _IN_TRANSACTION:
        yield con
        return
    con.execute("BEGIN TRANSACTION")
    _IN_TRANSACTION.add(id(con))
    try:
        s.ensure_schema(con)
        yield con
    except BaseException:
        _IN_TRANSACTION.discard(id(con))
        con.execute("ROLLBACK")
        raise
    _IN_TRANSACTION.discard(id(con))
    con.execute("COMMIT")


@contextmanager
def rolled_back(con) -> Iterator:
    """A transaction that is always rolled back: what happens inside is never committed."""
    con.execute("BEGIN TRANSACTION")
    _IN_TRANSACTION.add(id(con))
    try:
        s.ensure_schema(con)
        yield con
    finally:
        _IN_TRANSACTION.discard(id(con))
        con.execute("ROLLBACK")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _replace(con, table: str, integration: str, frame: pd.DataFrame) -> int:
    con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])
    return _insert(con, table, frame)


def _insert(con, table: str, frame: pd.DataFrame) -> int:
    if frame.empty:
        return 0
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    con.register("_incoming", frame)
    # No unregister on failure: in an aborted transaction it would raise and hide the real error.
    con.execute(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM _incoming')
    con.unregister("_incoming")
    return len(frame)


def _frame(data: list[dict] | dict[str, list], columns: list[str], integration: str, run_id: str) -> pd.DataFrame:
    """Rows (a list of dicts) or columns (a dict of lists) plus the integration and run columns."""
    # dtype=object: pandas would turn integers mixed with None into floats ("42.0").
    frame = pd.DataFrame(data, columns=columns, dtype=object)
    frame.insert(0, "integration", integration)
    frame["run_id"] = run_id
    frame["synced_at"] = _now()
    return frame


def _insert_issues(con, integration: str, run_id: str, issues: Iterable[ImportIssue]) -> int:
    rows = [(integration, run_id, i.stage, i.record, i.field, i.code, i.message, _now()) for i in issues]
    if rows:
        con.executemany(
            f'INSERT INTO "{s.IMPORT_ERRORS}" (integration, run_id, stage, record, field, code, message, '
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def replace_issues(con, integration: str, stage: str, run_id: str, issues: Iterable[ImportIssue],
                   records: set[str] | None = None) -> int:
    """Replace one stage's import errors for an integration (only those about ``records``, with
    an incremental stage: ``issues`` are then the new ones about them)."""
    if records is None:
        con.execute(f'DELETE FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ?', [integration, stage])
    else:
        _id_table(con, "_issue_records", records)
        con.execute(f'DELETE FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ? '
                    "AND record IN (SELECT id FROM _issue_records)", [integration, stage])
        issues = [i for i in issues if i.record in records]
    return _insert_issues(con, integration, run_id, issues)


def replace_value_issues(con, integration: str, stage: str, run_id: str, issues: Iterable[ImportIssue],
                         assessed: dict[str, set[str] | None] | None) -> int:
    """Replace a raw stage's import errors about values (see transform.values): all of them with
    ``assessed`` None (a full read), otherwise only those about the records and fields a delta
    round carried (record -> fields, None: every field of the record). A delta item is a patch:
    an error about a field the round did not carry stays until that field comes again, fixed or not."""
    if assessed is None:
        return replace_issues(con, integration, stage, run_id, issues)
    whole = sorted(r for r, fields in assessed.items() if fields is None)
    pairs = sorted((r, f) for r, fields in assessed.items() if fields is not None for f in fields)
    con.execute("CREATE OR REPLACE TEMP TABLE _assessed AS SELECT unnest(?::VARCHAR[]) AS record, "
                "unnest(?::VARCHAR[]) AS field", [[p[0] for p in pairs], [p[1] for p in pairs]])
    _id_table(con, "_assessed_whole", whole)
    con.execute(f'DELETE FROM "{s.IMPORT_ERRORS}" e WHERE integration = ? AND stage = ? '
                "AND (record IN (SELECT id FROM _assessed_whole) OR EXISTS (SELECT 1 FROM _assessed a "
                "WHERE a.record = e.record AND a.field = e.field))", [integration, stage])
    return _insert_issues(con, integration, run_id, issues)


def stage_issues(con, integration: str, stage: str, codes: Iterable[str]) -> list[ImportIssue]:
    """The import errors a stage holds now with one of ``codes``, in record order."""
    rows = con.execute(f'SELECT stage, record, field, code, message FROM "{s.IMPORT_ERRORS}" '
                       "WHERE integration = ? AND stage = ? AND code IN (SELECT unnest(?::VARCHAR[])) "
                       "ORDER BY record, field", [integration, stage, list(codes)]).fetchall()
    return [ImportIssue(*row) for row in rows]


# -- raw -------------------------------------------------------------------------------------

_USER_COLUMNS = ["id", "user_principal_name", "display_name", "mail", "data"]
_GROUP_COLUMNS = ["id", "display_name", "mail", "kind", "mail_enabled", "security_enabled", "group_types", "data"]
_EDGE_COLUMNS = ["group_id", "member_id", "member_type"]


def _user_frame(integration: str, run_id: str, users: Iterable[dict]) -> pd.DataFrame:
    rows = [
        {"id": u["id"], "user_principal_name": u.get("userPrincipalName"), "display_name": u.get("displayName"),
         "mail": u.get("mail"), "data": json.dumps(u, ensure_ascii=False)}
        for u in users
    ]
    return _frame(rows, _USER_COLUMNS, integration, run_id)


def _group_frame(integration: str, run_id: str, groups: Iterable[dict], kinds: dict[str, str]) -> pd.DataFrame:
    rows = [
        {"id": g["id"], "display_name": g.get("displayName"), "mail": g.get("mail"), "kind": kinds[g["id"]],
         "mail_enabled": g.get("mailEnabled"), "security_enabled": g.get("securityEnabled"),
         "group_types": list(g.get("groupTypes") or []), "data": json.dumps(g, ensure_ascii=False)}
        for g in groups
    ]
    return _frame(rows, _GROUP_COLUMNS, integration, run_id)


def _edge_frame(integration: str, run_id: str, edges: dict[str, list[tuple[str, str]]]) -> pd.DataFrame:
    columns = {"group_id": [], "member_id": [], "member_type": []}
    for group_id, members in edges.items():
        for member_type, member_id in members:
            columns["group_id"].append(group_id)
            columns["member_id"].append(member_id)
            columns["member_type"].append(member_type)
    return _frame(columns, _EDGE_COLUMNS, integration, run_id)


def write_raw_users(con, integration: str, run_id: str, users: list[dict]) -> int:
    return _replace(con, s.RAW_GRAPH_USERS, integration, _user_frame(integration, run_id, users))


def write_raw_groups(con, integration: str, run_id: str, groups: list[dict], kinds: dict[str, str],
                     edges: dict[str, list[tuple[str, str]]]) -> tuple[int, int]:
    n_groups = _replace(con, s.RAW_GRAPH_GROUPS, integration, _group_frame(integration, run_id, groups, kinds))
    n_members = _replace(con, s.RAW_GRAPH_GROUP_MEMBERS, integration, _edge_frame(integration, run_id, edges))
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


def _stored_json(con, table: str, integration: str, ids: list[str] | None) -> dict[str, dict]:
    """id -> parsed JSON of an integration's raw rows (only ``ids``, or all with None)."""
    if ids is None:
        rows = con.execute(f'SELECT id, data FROM "{table}" WHERE integration = ?', [integration]).fetchall()
    else:
        _id_table(con, "_stored_ids", ids)
        rows = con.execute(f'SELECT id, data FROM "{table}" WHERE integration = ? '
                           "AND id IN (SELECT id FROM _stored_ids)", [integration]).fetchall()
    return {i: json.loads(d) for i, d in rows}


def _delete_ids(con, table: str, integration: str, column: str, ids: Iterable[str]) -> None:
    _id_table(con, "_delete_ids", ids)
    con.execute(f'DELETE FROM "{table}" WHERE integration = ? AND "{column}" IN (SELECT id FROM _delete_ids)',
                [integration])


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


def apply_raw_users(con, integration: str, run_id: str, full: bool, users: dict[str, dict | None]) -> RawChange:
    """Write the users a delta round touched (``users``: id -> user now, None if removed; see
    graph.delta.apply_users). A full round replaces the integration's rows: every stored user
    it did not return is removed. Counts compare with the rows stored before."""
    if full:
        before = _stored_json(con, s.RAW_GRAPH_USERS, integration, None)
        after: dict[str, dict | None] = {uid: None for uid in before}
        after.update(users)
        change = _compare(before, after)
        write_raw_users(con, integration, run_id, [u for u in users.values() if u is not None])
    else:
        ids = list(users)
        change = _compare(_stored_json(con, s.RAW_GRAPH_USERS, integration, ids), users)
        _delete_ids(con, s.RAW_GRAPH_USERS, integration, "id", ids)
        _insert(con, s.RAW_GRAPH_USERS, _user_frame(integration, run_id, (u for u in users.values() if u)))
    change.total = count_rows(con, s.RAW_GRAPH_USERS, integration)
    return change


WORKER_BATCH = 5000  # report entries per insert: memory holds a batch, not the report
MISSING_WORKER_ID = "missing_worker_id"
DUPLICATE_WORKER_ID = "duplicate_worker_id"
STAGED = "staged_workday"


def stage_workers(path: str, entries: Iterable[dict], id_field: str, keep: set[str]) -> int:
    """Write a report's entries, as they stream, into table ``workers`` of a new DuckDB file at
    ``path``: the warehouse is not opened (and not locked) while a large report downloads. Only
    the columns in ``keep`` are kept, within the limits of transform.values: a value beyond them
    is left out and an import error about it goes to table ``issues`` (an entry whose id is
    unusable is left out whole). Raises whatever ``entries`` raises; the file is then simply
    thrown away."""
    from entra_pipeline.warehouse import connect

    # The same memory bound as the warehouse (see warehouse.connect): the scratch file spills to
    # its own temp directory next to it.
    con = connect(path, wait_seconds=0)
    try:
        con.execute("CREATE TABLE workers (pos BIGINT, id VARCHAR, data VARCHAR)")
        con.execute("CREATE TABLE issues (pos BIGINT, record VARCHAR, field VARCHAR, code VARCHAR, "
                    "message VARCHAR)")
        batch: list[tuple] = []
        problems: list[tuple] = []
        count = 0
        for count, entry in enumerate(entries, start=1):
            wid, kept, issues, usable = values.check_entry(entry, keep, id_field, count, s.RAW_WORKDAY_WORKERS)
            problems += [(count, i.record, i.field, i.code, i.message) for i in issues]
            if usable:
                # Sorted keys: a worker whose entry did not change compares equal as text.
                batch.append((count, wid,
                              json.dumps(kept, ensure_ascii=False, sort_keys=True, separators=(",", ":"))))
            if len(batch) >= WORKER_BATCH:
                _insert(con, "workers", pd.DataFrame(batch, columns=["pos", "id", "data"], dtype=object))
                batch.clear()
        _insert(con, "workers", pd.DataFrame(batch, columns=["pos", "id", "data"], dtype=object))
        if problems:
            con.executemany("INSERT INTO issues VALUES (?, ?, ?, ?, ?)", problems)
        return count
    finally:
        con.close()


@contextmanager
def staged(con, path: str) -> Iterator[None]:
    """The staged report attached read-only to the warehouse connection as ``staged_workday``."""
    con.execute(f"ATTACH ? AS {STAGED} (READ_ONLY)", [path])
    try:
        yield
    finally:
        con.execute(f"DETACH {STAGED}")


def apply_raw_workers(con, integration: str, run_id: str, id_field: str) -> tuple[RawChange, list[ImportIssue]]:
    """Replace an integration's Workday workers with the staged report (see ``staged``), compared
    with the stored rows for the change counts and the change log. An entry without ``id_field``,
    or repeating another's, is kept out and reported (the first of a repeated id stays)."""
    stage = table = s.RAW_WORKDAY_WORKERS
    source = f"{STAGED}.workers"
    issues = [ImportIssue(stage, record, field_, code, message) for record, field_, code, message in con.execute(
        f"SELECT record, field, code, message FROM {STAGED}.issues ORDER BY pos, field").fetchall()]
    issues += [ImportIssue(stage, f"entry {pos}", id_field, MISSING_WORKER_ID,
                           f"report entry {pos} has no {id_field}; not imported")
               for (pos,) in con.execute(f"SELECT pos FROM {source} WHERE id IS NULL ORDER BY pos").fetchall()]
    for wid, positions in con.execute(f"SELECT id, list(pos ORDER BY pos) FROM {source} WHERE id IS NOT NULL "
                                      "GROUP BY id HAVING count(*) > 1 ORDER BY id").fetchall():
        issues += [ImportIssue(stage, wid, id_field, DUPLICATE_WORKER_ID,
                               f"report entry {pos} repeats {id_field} {wid!r} of entry {positions[0]}; not imported")
                   for pos in positions[1:]]
    con.execute("CREATE OR REPLACE TEMP TABLE _workers_new AS SELECT id, data FROM ("
                f"SELECT id, data, row_number() OVER (PARTITION BY id ORDER BY pos) AS n FROM {source} "
                "WHERE id IS NOT NULL) WHERE n = 1")
    change = RawChange()
    for kind, sql in (
        ("added", f'SELECT id FROM _workers_new WHERE id NOT IN (SELECT id FROM "{table}" WHERE integration = ?)'),
        ("removed", f'SELECT id FROM "{table}" WHERE integration = ? AND id NOT IN (SELECT id FROM _workers_new)'),
        ("updated", f'SELECT n.id FROM _workers_new n JOIN "{table}" r ON r.integration = ? AND r.id = n.id '
                    "WHERE CAST(r.data AS VARCHAR) <> n.data"),
    ):
        ids = [r[0] for r in con.execute(sql, [integration]).fetchall()]
        setattr(change, kind, len(ids))
        change.changed_ids.update(ids)
    con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])
    con.execute(f'INSERT INTO "{table}" (integration, id, data, run_id, synced_at) '
                "SELECT ?, id, data, ?, ? FROM _workers_new", [integration, run_id, _now()])
    change.total = count_rows(con, table, integration)
    return change, issues


def drop_other_source(con, integration: str, kind: str) -> None:
    """An integration that changed source type keeps no rows of the other type's raw tables: they
    would still feed its lists and mapping bookkeeping."""
    other = ((s.RAW_GRAPH_USERS, s.RAW_GRAPH_GROUPS, s.RAW_GRAPH_GROUP_MEMBERS, s.DELTA_STATE) if kind == WORKDAY
             else (s.RAW_WORKDAY_WORKERS,))
    for table in other:
        con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])


def with_manager_mail(con, integration: str, users: dict[str, dict | None], full: bool) -> dict[str, dict | None]:
    """Give each user's ``manager`` the manager's mail, as ``$expand=manager`` would: delta names
    the manager by id only. ``users`` are the users a round touched (all of them in a full
    round); returned with, in an incremental round, the untouched users whose manager's mail the
    round changed (or whose manager it removed), so they are rewritten too. A manager who is not
    a user of the tenant (an orgContact) has no mail here."""
    mails = {uid: (u or {}).get("mail") for uid, u in users.items()}
    if not full:
        wanted = {(u.get("manager") or {}).get("id") for u in users.values() if u} - set(users) - {None}
        _id_table(con, "_managers", wanted)
        mails.update(con.execute(f'SELECT id, mail FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ? '
                                 "AND id IN (SELECT id FROM _managers)", [integration]).fetchall())
        # Reports of a touched user whose mail changed or who left keep the manager's mail current.
        _id_table(con, "_touched", users)
        for uid, data in con.execute(
                f'SELECT id, data FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ? '
                "AND id NOT IN (SELECT id FROM _touched) "
                "AND json_extract_string(data, '$.manager.id') IN (SELECT id FROM _touched)",
                [integration]).fetchall():
            report = json.loads(data)
            manager = report["manager"]
            if "mail" not in manager or manager["mail"] != mails.get(manager["id"]):
                users[uid] = report
    for user in users.values():
        manager = (user or {}).get("manager")
        if manager:
            user["manager"] = {"id": manager["id"], "mail": mails.get(manager["id"])}
    return users


def apply_raw_groups(con, integration: str, run_id: str, full: bool, groups: dict[str, dict | None],
                     members: dict[str, dict[str, str | None]], kinds: dict[str, str]) -> RawChange:
    """Write the groups a delta round touched and its membership changes (see
    graph.delta.apply_groups). A full round replaces the integration's groups and memberships; an
    incremental one deletes and inserts single memberships (replays are harmless)."""
    ids = None if full else list(groups)
    before = _stored_json(con, s.RAW_GRAPH_GROUPS, integration, ids)
    after: dict[str, dict | None] = dict.fromkeys(before) if full else {}
    after.update(groups)
    change = _compare(before, after)
    kept = {gid: g for gid, g in groups.items() if g is not None}
    if full:
        old_edges = _stored_edges(con, integration)
        edges = {gid: [(t, m) for m, t in members.get(gid, {}).items() if t is not None] for gid in kept}
        new_pairs = {(gid, m) for gid, links in edges.items() for _, m in links}
        old_pairs = {(gid, m) for gid, links in old_edges.items() for m in links}
        change.memberships_added, change.memberships_removed = len(new_pairs - old_pairs), len(old_pairs - new_pairs)
        write_raw_groups(con, integration, run_id, list(kept.values()), kinds, edges)
    else:
        gone = [gid for gid, g in groups.items() if g is None]
        ops = [(gid, m, t) for gid, links in members.items() if gid in kept for m, t in links.items()]
        con.execute("CREATE OR REPLACE TEMP TABLE _member_ops AS SELECT unnest(?::VARCHAR[]) AS group_id, "
                    "unnest(?::VARCHAR[]) AS member_id, unnest(?::VARCHAR[]) AS member_type",
                    [[o[0] for o in ops], [o[1] for o in ops], [o[2] for o in ops]])
        _id_table(con, "_gone_groups", gone)
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
                    "WHERE member_type IS NOT NULL", [integration, run_id, _now()])
        _delete_ids(con, s.RAW_GRAPH_GROUPS, integration, "id", groups)
        _insert(con, s.RAW_GRAPH_GROUPS, _group_frame(integration, run_id, kept.values(), kinds))
    change.total = count_rows(con, s.RAW_GRAPH_GROUPS, integration)
    return change


def _stored_edges(con, integration: str) -> dict[str, dict[str, str]]:
    edges: dict[str, dict[str, str]] = {}
    for gid, mid, mtype in con.execute(
            f'SELECT group_id, member_id, member_type FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ?',
            [integration]).fetchall():
        edges.setdefault(gid, {})[mid] = mtype
    return edges


def stored_groups(con, integration: str, group_ids: list[str]) -> dict[str, dict]:
    """The stored JSON of some groups (what a delta round patches)."""
    return _stored_json(con, s.RAW_GRAPH_GROUPS, integration, group_ids)


def stored_users(con, integration: str, user_ids: list[str]) -> dict[str, dict]:
    return _stored_json(con, s.RAW_GRAPH_USERS, integration, user_ids)


@dataclass
class DeltaState:
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
                    [integration, resource, delta_link, sorted(fields), full_round_at or _now(), run_id, _now()])


def record_stage(con, integration: str, run_id: str, stage: str, started_at: datetime, *,
                 read_mode: str | None = None, read_reason: str | None = None, changes_read: int | None = None,
                 added: int | None = None, updated: int | None = None, removed: int | None = None,
                 graph_requests: int | None = None, graph_bytes: int | None = None) -> None:
    """One sync_run_stages row (a re-executed step replaces its row)."""
    s.ensure_schema(con)
    con.execute(f'DELETE FROM "{s.SYNC_RUN_STAGES}" WHERE integration = ? AND run_id = ? AND stage = ?',
                [integration, run_id, stage])
    con.execute(f'INSERT INTO "{s.SYNC_RUN_STAGES}" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                [integration, run_id, stage, started_at, _now(), read_mode, read_reason, changes_read,
                 added, updated, removed, graph_requests, graph_bytes])


def read_groups(con, integration: str) -> list[dict]:
    """Every group's Graph JSON, by display name."""
    return [json.loads(r[0]) for r in con.execute(
        f'SELECT data FROM "{s.RAW_GRAPH_GROUPS}" WHERE integration = ? ORDER BY display_name, id',
        [integration]).fetchall()]


def read_edges(con, integration: str, group_ids: Iterable[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """group id -> its direct members as (member type, object id); only ``group_ids``, if given."""
    only = ""
    if group_ids is not None:
        _id_table(con, "_edge_groups", group_ids)
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
    _id_table(con, "_member_users", user_ids)
    groups: dict[str, set[str]] = {}
    for group_id, member_id in con.execute(
            f'SELECT group_id, member_id FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ? '
            "AND member_id IN (SELECT id FROM _member_users)", [integration]).fetchall():
        groups.setdefault(member_id, set()).add(group_id)
    return groups


def direct_member_counts(con, integration: str) -> dict[str, int]:
    return dict(con.execute(f'SELECT group_id, count(*) FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ? '
                            "GROUP BY group_id", [integration]).fetchall())


# -- contacts --------------------------------------------------------------------------------



MAPPED_WORK = "_mapped_work"  # per-connection temporary table: the mapping's result before it is written


@dataclass
class MappingSummary:
    users_read: int
    contacts: int
    issues: list[ImportIssue]
    sample: list[dict]
    #: With an incremental mapping: the users re-mapped (changed ones, and everyone sharing a
    #: Unique Contact ID with one of them, before or after). None: every user was mapped.
    candidates: set[str] | None = None


def _id_table(con, name: str, ids: Iterable[str]) -> None:
    """A temporary one-column table ``name(id)`` holding ``ids``."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT unnest(?::VARCHAR[]) AS id", [sorted(set(ids))])


def _raw_subset(con, integration: str, raw: str) -> None:
    """TEMP TABLE _raw_subset: the raw people whose ids are in TEMP TABLE _candidates."""
    con.execute(f'CREATE OR REPLACE TEMP TABLE _raw_subset AS SELECT * FROM "{raw}" '
                "WHERE integration = ? AND id IN (SELECT id FROM _candidates)", [integration])


def map_raw_users(con, integration: str, plan: list[mapping.FieldPlan], unique_id: str,
                  imported_fields: list[str], changed: set[str] | None = None,
                  kind: str = ENTRA) -> MappingSummary:
    """Run the mapping inside DuckDB into a temporary table (nothing is written to the warehouse
    yet) and return what the checks need: counts, import issues and a sample.

    With ``changed`` (user ids changed or removed since the last mapping) only those users are
    mapped again, plus every user sharing a Unique Contact ID with one of them before or after
    the change, so duplicate ranks come out exactly as a full mapping would make them. ``kind``
    is the source type: its raw table and how it ranks duplicates."""
    raw = table = s.RAW_PEOPLE[kind]
    candidates = None
    if changed is not None:
        _id_table(con, "_candidates", changed)
        _raw_subset(con, integration, raw)
        sql, params = mapping.mapping_query(plan, unique_id, imported_fields, integration, "_raw_subset", kind)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _mapped_changed AS SELECT contact_id FROM ({sql})", params)
        candidates = {r[0] for r in con.execute(f"""
            SELECT id FROM _candidates
            UNION SELECT source_id FROM "{s.MAPPED_USER_IDS}" WHERE integration = ? AND contact_id IN (
                SELECT contact_id FROM _mapped_changed WHERE contact_id IS NOT NULL
                UNION SELECT contact_id FROM "{s.MAPPED_USER_IDS}"
                      WHERE integration = ? AND source_id IN (SELECT id FROM _candidates))""",
                                                      [integration, integration]).fetchall()}
        _id_table(con, "_candidates", candidates)
        _raw_subset(con, integration, raw)
        table = "_raw_subset"
    sql, params = mapping.mapping_query(plan, unique_id, imported_fields, integration, table, kind)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {MAPPED_WORK} AS {sql}", params)
    users, contacts = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE contact_id IS NOT NULL AND _dup_rank = 1) FROM {MAPPED_WORK}"
    ).fetchone()
    issues = mapping.issues_from_rows(plan, unique_id, con.execute(
        mapping.problems_query(plan, unique_id, MAPPED_WORK)).fetchall(), kind)
    if candidates is not None:
        # Totals for the checks: the untouched users as they are, the candidates as re-mapped.
        users = count_rows(con, raw, integration)
        contacts += con.execute(f'SELECT count(*) FROM "{s.MAPPED_CONTACTS}" WHERE integration = ? '
                                "AND source_id NOT IN (SELECT id FROM _candidates)", [integration]).fetchone()[0]
        kept = [ImportIssue(*row) for row in con.execute(
            f'SELECT stage, record, field, code, message FROM "{s.IMPORT_ERRORS}" WHERE integration = ? '
            "AND stage = ? AND record NOT IN (SELECT id FROM _candidates) ORDER BY record, code, field",
            [integration, mapping.STAGE]).fetchall()]
        issues = sorted(kept + issues, key=lambda i: (i.record or "", i.code, i.field or ""))
    columns = ["contact_id", "display_name", "department", "country"]
    sample = [dict(zip(columns, row)) for row in con.execute(
        f"SELECT {', '.join(columns)} FROM {MAPPED_WORK} WHERE contact_id IS NOT NULL AND _dup_rank = 1 "
        "ORDER BY contact_id LIMIT 10").fetchall()]
    return MappingSummary(users, contacts, issues, sample, candidates)


def write_mapped_contacts(con, integration: str, run_id: str, plan: list[mapping.FieldPlan],
                          custom_fields: dict[str, str], candidates: set[str] | None = None) -> int:
    """Replace an integration's mapped contacts (only the ``candidates`` of an incremental
    mapping, if given) with the result of ``map_raw_users`` on this connection; custom fields
    (name -> type) become typed columns. The rows written."""
    s.ensure_custom_columns(con, custom_fields)
    only = "" if candidates is None else " AND source_id IN (SELECT id FROM _candidates)"
    for table in (s.MAPPED_CONTACTS, s.MAPPED_USER_IDS):
        con.execute(f'DELETE FROM "{table}" WHERE integration = ?{only}', [integration])
    con.execute(f'INSERT INTO "{s.MAPPED_USER_IDS}" SELECT ?, _source_id, contact_id FROM {MAPPED_WORK} '
                "WHERE contact_id IS NOT NULL", [integration])
    fields = ", ".join(f'"{p.contact_field}"' for p in plan)
    return con.execute(
        f'INSERT INTO "{s.MAPPED_CONTACTS}" BY NAME SELECT ? AS integration, contact_id, _source_id AS source_id, '
        f"{fields}, imported, ? AS run_id, ? AS synced_at FROM {MAPPED_WORK} "
        "WHERE contact_id IS NOT NULL AND _dup_rank = 1", [integration, run_id, _now()]).fetchone()[0]


def extension_value_counts(con, integration: str, attributes: list[str]) -> dict[str, int]:
    """How many of an integration's raw users carry a non-empty value in each extension attribute."""
    if not attributes:
        return {}
    value = mapping.strip("json_extract_string(data, ?)")
    counts = ", ".join(f"count(*) FILTER (WHERE nullif({value}, '') IS NOT NULL)" for _ in attributes)
    row = con.execute(f'SELECT {counts} FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ?',
                      [*(mapping.json_path(a) for a in attributes), integration]).fetchone()
    return dict(zip(attributes, row))


def read_for_rules(con, integration: str, contact_fields: list[str], imported_fields: list[str],
                   table: str = s.MAPPED_CONTACTS, source_ids: set[str] | None = None) -> list[dict]:
    """Contacts with only what rules test: the named contact fields and the named imported fields
    (parsed from the ``imported`` JSON by DuckDB, not in Python); only ``source_ids``, if given."""
    paths = [f'$."{name}"' for name in imported_fields]  # names are validated field names
    columns = "".join(f', "{name}"' for name in contact_fields)
    only = ""
    if source_ids is not None:
        _id_table(con, "_rule_sources", source_ids)
        only = " AND source_id IN (SELECT id FROM _rule_sources)"
    rows = con.execute(
        f'SELECT contact_id, source_id{columns}, json_extract(imported, ?::VARCHAR[]) '
        f'FROM "{table}" WHERE integration = ?{only} ORDER BY contact_id',
        [paths, integration]).fetchall()
    contacts = []
    for row in rows:
        contact = dict(zip(["contact_id", "source_id", *contact_fields], row[:-1]))
        contact["imported"] = {name: json.loads(v) if v is not None else None
                               for name, v in zip(imported_fields, row[-1] or [])}
        contacts.append(contact)
    return contacts


def write_contacts_except(con, integration: str, run_id: str, excluded: Iterable[str],
                          source_ids: set[str] | None = None) -> int:
    """Replace an integration's contacts with its mapped contacts minus ``excluded`` contact ids,
    copied inside DuckDB (every column, custom ones included), and append what changed to
    ``contact_changes``. With ``source_ids`` only the contacts of those directory users are
    replaced (an incremental sync: everyone else is unchanged). The rows written."""
    # The columns both tables have (custom fields are added to both; this survives a hand-made one).
    shared = [name for (name,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND column_name IN "
        "(SELECT column_name FROM information_schema.columns WHERE table_name = ?) ORDER BY ordinal_position",
        [s.MAPPED_CONTACTS, s.CONTACTS]).fetchall() if name not in ("run_id", "synced_at")]
    columns = ", ".join(f'"{name}"' for name in shared)
    only = ""
    if source_ids is not None:
        _id_table(con, "_contact_sources", source_ids)
        only = " AND source_id IN (SELECT id FROM _contact_sources)"
    con.execute(f'CREATE OR REPLACE TEMP TABLE _previous_contacts AS SELECT {columns} FROM "{s.CONTACTS}" '
                f"WHERE integration = ?{only}", [integration])
    con.execute(f'DELETE FROM "{s.CONTACTS}" WHERE integration = ?{only}', [integration])
    _id_table(con, "_excluded", excluded)
    now = _now()
    count = con.execute(
        f'INSERT INTO "{s.CONTACTS}" ({columns}, run_id, synced_at) SELECT {columns}, ?, ? '
        f'FROM "{s.MAPPED_CONTACTS}" WHERE integration = ?{only} '
        f"AND contact_id NOT IN (SELECT id FROM _excluded)",
        [run_id, now, integration]).fetchone()[0]
    _record_changes(con, integration, run_id, now, [c for c in shared if c not in ("integration", "contact_id",
                                                                                   "imported")], only)
    con.execute("DROP TABLE _previous_contacts")
    return count


def _record_changes(con, integration: str, run_id: str, now, fields: list[str], only: str = "") -> None:
    """Append joined / updated (with each changed field's old and new value) / left contacts."""
    pairs = ", ".join(f"{{'field': '{f}', 'old': CAST(o.\"{f}\" AS VARCHAR), 'new': CAST(n.\"{f}\" AS VARCHAR)}}"
                      for f in fields)  # validated column names
    con.execute(f"""
        INSERT INTO "{s.CONTACT_CHANGES}" (integration, contact_id, change, changes, run_id, changed_at)
        SELECT ?, coalesce(n.contact_id, o.contact_id),
               CASE WHEN o.contact_id IS NULL THEN 'joined' WHEN n.contact_id IS NULL THEN 'left' ELSE 'updated' END,
               CASE WHEN o.contact_id IS NOT NULL AND n.contact_id IS NOT NULL
                    THEN to_json(list_filter([{pairs}], lambda x: x.old IS DISTINCT FROM x.new)) END,
               ?, ?
        FROM (SELECT * FROM "{s.CONTACTS}" WHERE integration = ?{only}) n
        FULL OUTER JOIN _previous_contacts o ON o.contact_id = n.contact_id
        WHERE o.contact_id IS NULL OR n.contact_id IS NULL
           OR len(list_filter([{pairs}], lambda x: x.old IS DISTINCT FROM x.new)) > 0""",
                [integration, run_id, now, integration])


def write_exclusions(con, integration: str, run_id: str, excluded: list[tuple[dict, str]],
                     source_ids: set[str] | None = None) -> int:
    """Replace an integration's exclusions (only those of ``source_ids``, if given)."""
    rows = [{"contact_id": c["contact_id"], "source_id": c["source_id"], "rule": rule} for c, rule in excluded]
    frame = _frame(rows, ["contact_id", "source_id", "rule"], integration, run_id)
    if source_ids is None:
        return _replace(con, s.EXCLUDED_CONTACTS, integration, frame)
    _delete_ids(con, s.EXCLUDED_CONTACTS, integration, "source_id", source_ids)
    return _insert(con, s.EXCLUDED_CONTACTS, frame)


def contacts_of(con, integration: str, source_ids: set[str]) -> set[str]:
    """Contact ids of the current contacts that come from ``source_ids``."""
    _id_table(con, "_of_sources", source_ids)
    return {r[0] for r in con.execute(f'SELECT contact_id FROM "{s.CONTACTS}" WHERE integration = ? '
                                      "AND source_id IN (SELECT id FROM _of_sources)", [integration]).fetchall()}


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


def write_fields_read(con, integration: str, stage: str, run_id: str, fields: Iterable[str]) -> None:
    """Record which directory fields a stage's rows carry (see ``fields_read``)."""
    con.execute(f'DELETE FROM "{s.DIRECTORY_FIELDS_READ}" WHERE integration = ? AND stage = ?', [integration, stage])
    con.execute(f'INSERT INTO "{s.DIRECTORY_FIELDS_READ}" VALUES (?, ?, ?, ?, ?)',
                [integration, stage, sorted(fields), run_id, _now()])


def fields_read(con, integration: str, stage: str) -> set[str] | None:
    """The directory fields a stage's current rows carry; None if the stage never ran."""
    s.ensure_schema(con)
    row = con.execute(f'SELECT fields FROM "{s.DIRECTORY_FIELDS_READ}" WHERE integration = ? AND stage = ?',
                      [integration, stage]).fetchone()
    return set(row[0]) if row else None


# -- lists -----------------------------------------------------------------------------------

_LIST_COLUMNS = ["list_id", "source_group_id", "display_name", "mail", "kind", "member_count",
                 "users_not_contacts", "users_excluded", "users_without_contact_id", "non_user_members",
                 "non_user_member_types", "nested_groups"]


def write_lists(con, integration: str, run_id: str, lists: list[dict], members: list[tuple[str, str]],
                non_members: list[tuple[str, str, str, str]]) -> tuple[int, int]:
    rows = [{**l, "non_user_member_types": json.dumps(l["non_user_member_types"])} for l in lists]
    n_lists = _replace(con, s.DISTRIBUTION_LISTS, integration, _frame(rows, _LIST_COLUMNS, integration, run_id))
    columns = {"list_id": [m[0] for m in members], "contact_id": [m[1] for m in members]}
    n_members = _replace(con, s.DISTRIBUTION_LIST_MEMBERS, integration,
                         _frame(columns, ["list_id", "contact_id"], integration, run_id))
    names = ["list_id", "object_id", "object_type", "reason"]
    columns = {name: [row[i] for row in non_members] for i, name in enumerate(names)}
    _replace(con, s.DISTRIBUTION_LIST_NON_MEMBERS, integration, _frame(columns, names, integration, run_id))
    return n_lists, n_members


def write_list_changes(con, integration: str, run_id: str, rebuilt: list[dict], drop: set[str],
                       contacts: set[str], users: set[str], members: set[tuple[str, str]],
                       non_members: set[tuple[str, str, str, str]]) -> None:
    """An incremental distribution_lists write. Lists in ``drop`` lose every row, ``rebuilt``
    lists (also in ``drop``) are written whole; in the other lists the rows of ``contacts``
    (members) and of ``users`` (non-members) are replaced by ``members`` / ``non_members``. Every
    list's counts are then recounted from its rows (nested and non-user counts only change with
    a rebuild)."""
    _id_table(con, "_drop_lists", drop)
    _id_table(con, "_changed_contacts", contacts)
    _id_table(con, "_changed_users", users)
    for table in (s.DISTRIBUTION_LISTS, s.DISTRIBUTION_LIST_MEMBERS, s.DISTRIBUTION_LIST_NON_MEMBERS):
        con.execute(f'DELETE FROM "{table}" WHERE integration = ? AND list_id IN (SELECT id FROM _drop_lists)',
                    [integration])
    con.execute(f'DELETE FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ? '
                "AND contact_id IN (SELECT id FROM _changed_contacts)", [integration])
    con.execute(f'DELETE FROM "{s.DISTRIBUTION_LIST_NON_MEMBERS}" WHERE integration = ? AND object_type = ? '
                "AND object_id IN (SELECT id FROM _changed_users)", [integration, lists.USER])
    rows = [{**l, "non_user_member_types": json.dumps(l["non_user_member_types"])} for l in rebuilt]
    _insert(con, s.DISTRIBUTION_LISTS, _frame(rows, _LIST_COLUMNS, integration, run_id))
    pairs = sorted(members)
    _insert(con, s.DISTRIBUTION_LIST_MEMBERS, _frame({"list_id": [p[0] for p in pairs], "contact_id": [p[1] for p in pairs]},
                                                     ["list_id", "contact_id"], integration, run_id))
    names = ["list_id", "object_id", "object_type", "reason"]
    rows_ = sorted(non_members)
    _insert(con, s.DISTRIBUTION_LIST_NON_MEMBERS, _frame({n: [r[i] for r in rows_] for i, n in enumerate(names)},
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
    _id_table(con, "_rows_contacts", contacts)
    _id_table(con, "_rows_lists", lists_)
    return set(con.execute(
        f'SELECT list_id, contact_id FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ? '
        "AND (contact_id IN (SELECT id FROM _rows_contacts) OR list_id IN (SELECT id FROM _rows_lists))",
        [integration]).fetchall())


def write_available_groups(con, integration: str, run_id: str, rows: list[dict]) -> int:
    columns = ["group_id", "display_name", "mail", "kind", "direct_members", "selected", "same_name_groups"]
    return _replace(con, s.AVAILABLE_GROUPS, integration, _frame(rows, columns, integration, run_id))


def previous_lists(con, integration: str) -> dict[str, str]:
    """List id -> display name of the integration's lists as last written."""
    return dict(con.execute(f'SELECT list_id, display_name FROM "{s.DISTRIBUTION_LISTS}" WHERE integration = ?',
                            [integration]).fetchall())


def people(con, integration: str, user_ids: Iterable[str] | None = None) -> lists.People:
    """What the contact stages decided about each directory user (only ``user_ids``, if given;
    see transform.lists.People)."""
    only = {"source_id": "", "record": "", "id": ""}
    if user_ids is not None:
        _id_table(con, "_people", user_ids)
        only = {c: f" AND {c} IN (SELECT id FROM _people)" for c in only}
    contacts = dict(con.execute(
        f'SELECT source_id, contact_id FROM "{s.CONTACTS}" WHERE integration = ?{only["source_id"]}',
        [integration]).fetchall())
    excluded = dict(con.execute(
        f'SELECT source_id, rule FROM "{s.EXCLUDED_CONTACTS}" WHERE integration = ?{only["source_id"]}',
        [integration]).fetchall())
    duplicates = {r[0] for r in con.execute(
        f'SELECT record FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ? AND code = ?{only["record"]}',
        [integration, mapping.STAGE, mapping.DUPLICATE_UNIQUE_ID]).fetchall()}
    # An integration has rows in its own source type's raw table only.
    read = {r[0] for r in con.execute(
        f'SELECT id FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ?{only["id"]} '
        f'UNION ALL SELECT id FROM "{s.RAW_WORKDAY_WORKERS}" WHERE integration = ?{only["id"]}',
        [integration, integration]).fetchall()}
    return lists.People(contacts, excluded, frozenset(duplicates - set(contacts)), frozenset(read))


# -- the deletion guard's "before" ----------------------------------------------------------------

def contact_ids(con, integration: str) -> set[str]:
    s.ensure_schema(con)
    return {r[0] for r in con.execute(f'SELECT contact_id FROM "{s.CONTACTS}" WHERE integration = ?',
                                      [integration]).fetchall()}


def memberships(con, integration: str) -> set[tuple[str, str]]:
    return set(con.execute(f'SELECT list_id, contact_id FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ?',
                           [integration]).fetchall())


def count_rows(con, table: str, integration: str) -> int:
    s.ensure_schema(con)
    return con.execute(f'SELECT count(*) FROM "{table}" WHERE integration = ?', [integration]).fetchone()[0]


# -- previews ----------------------------------------------------------------------------------

def sample_rows(con, table: str, integration: str, columns: list[str], limit: int = 10) -> list[dict]:
    """The first rows of an integration, by contact id, as dicts (for previews)."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    cursor = con.execute(f'SELECT {quoted} FROM "{table}" WHERE integration = ? ORDER BY 1 LIMIT ?',
                         [integration, limit])
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


# -- preview -------------------------------------------------------------------------------------

@dataclass
class PreviewState:
    """What the preview compares against: the committed exclusions, lists and memberships."""

    excluded: dict[str, str]
    lists: dict[str, str]
    members: set[tuple[str, str]]


def preview_state(con, integration: str) -> PreviewState:
    excluded = dict(con.execute(f'SELECT contact_id, rule FROM "{s.EXCLUDED_CONTACTS}" WHERE integration = ?',
                                [integration]).fetchall())
    return PreviewState(excluded, previous_lists(con, integration), memberships(con, integration))


def change_counts(con, integration: str, run_id: str) -> dict[str, int]:
    """joined / updated / left -> how many contact_changes rows ``run_id`` appended."""
    return dict(con.execute(f'SELECT change, count(*) FROM "{s.CONTACT_CHANGES}" WHERE integration = ? '
                            "AND run_id = ? GROUP BY change", [integration, run_id]).fetchall())


def preview_rows(con, integration: str, run_id: str, before: PreviewState) -> list[tuple]:
    """(change, contact_id, list_id, details) for everything the stages written on ``con`` under
    ``run_id`` changed compared with ``before`` (call inside the transaction, before rolling back)."""
    rows: list[tuple] = []
    for change, contact_id, details in con.execute(
            f'SELECT change, contact_id, changes FROM "{s.CONTACT_CHANGES}" WHERE integration = ? AND run_id = ? '
            "ORDER BY contact_id", [integration, run_id]).fetchall():
        rows.append((f"contact_{change}", contact_id, None,
                     {"fields": json.loads(details)} if details else None))
    after = preview_state(con, integration)
    for contact_id in sorted(after.excluded.keys() - before.excluded.keys()):
        rows.append(("contact_excluded", contact_id, None, {"rule": after.excluded[contact_id]}))
    for contact_id in sorted(before.excluded.keys() - after.excluded.keys()):
        rows.append(("contact_no_longer_excluded", contact_id, None, {"rule": before.excluded[contact_id]}))
    for list_id in sorted(after.lists.keys() - before.lists.keys()):
        rows.append(("list_added", None, list_id, {"display_name": after.lists[list_id]}))
    for list_id in sorted(before.lists.keys() - after.lists.keys()):
        rows.append(("list_removed", None, list_id, {"display_name": before.lists[list_id]}))
    for list_id, contact_id in sorted(after.members - before.members):
        rows.append(("list_member_added", contact_id, list_id, None))
    for list_id, contact_id in sorted(before.members - after.members):
        rows.append(("list_member_removed", contact_id, list_id, None))
    return rows


def write_preview(con, integration: str, run_id: str, rows: list[tuple]) -> int:
    """Replace the integration's preview report."""
    con.execute(f'DELETE FROM "{s.SYNC_PREVIEW}" WHERE integration = ?', [integration])
    now = _now()
    if rows:
        con.executemany(f'INSERT INTO "{s.SYNC_PREVIEW}" VALUES (?, ?, ?, ?, ?, ?, ?)',
                        [(integration, run_id, kind, cid, lid, json.dumps(d) if d is not None else None, now)
                         for kind, cid, lid, d in rows])
    return len(rows)


# -- incremental stages: change log and bookkeeping ------------------------------------------------

@dataclass
class StageState:
    consumed_seq: int | None
    produced_seq: int
    fingerprint: str | None


def stage_state(con, integration: str, stage: str) -> StageState | None:
    s.ensure_schema(con)
    row = con.execute(f'SELECT consumed_seq, produced_seq, fingerprint FROM "{s.STAGE_STATE}" '
                      "WHERE integration = ? AND stage = ?", [integration, stage]).fetchone()
    return StageState(row[0], row[1] or 0, row[2]) if row else None


def _save_state(con, integration: str, stage: str, run_id: str, state: StageState) -> None:
    con.execute(f'DELETE FROM "{s.STAGE_STATE}" WHERE integration = ? AND stage = ?', [integration, stage])
    con.execute(f'INSERT INTO "{s.STAGE_STATE}" VALUES (?, ?, ?, ?, ?, ?, ?)',
                [integration, stage, state.consumed_seq, state.produced_seq, state.fingerprint, run_id, _now()])


def log_changes(con, integration: str, stage: str, run_id: str, object_ids: Iterable[str] | None) -> None:
    """Append what a stage's write changed to its change log (None: everything may have changed)."""
    state = stage_state(con, integration, stage) or StageState(None, 0, None)
    ids = None if object_ids is None else sorted(set(object_ids))
    if ids == []:
        return
    state.produced_seq += 1
    _save_state(con, integration, stage, run_id, state)
    frame = pd.DataFrame({"integration": integration, "stage": stage, "seq": state.produced_seq,
                          "object_id": ids if ids is not None else [None]})
    _insert(con, s.STAGE_CHANGES, frame)


def changes_since(con, integration: str, producer: str, consumer: str) -> tuple[set[str] | None, int]:
    """(object ids the producer changed since the consumer last consumed its log, or None when the
    consumer must recompute everything; the producer's latest seq)."""
    produced = stage_state(con, integration, producer)
    consumed = stage_state(con, integration, consumer)
    latest = produced.produced_seq if produced else 0
    if produced is None or consumed is None or consumed.consumed_seq is None:
        return None, latest
    rows = con.execute(f'SELECT DISTINCT object_id FROM "{s.STAGE_CHANGES}" WHERE integration = ? AND stage = ? '
                       "AND seq > ?", [integration, producer, consumed.consumed_seq]).fetchall()
    ids = {r[0] for r in rows}
    return (None if None in ids else ids), latest


def consumed(con, integration: str, consumer: str, producer: str, run_id: str, seq: int,
             fingerprint: str) -> None:
    """The consumer has applied the producer's log up to ``seq`` with this configuration; the
    consumed part of the log is dropped. Each log has exactly one consumer (raw_graph_users ->
    mapped_contacts -> filtered_contacts -> distribution_lists, raw_graph_groups ->
    distribution_lists): a second one would miss what the first dropped."""
    state = stage_state(con, integration, consumer) or StageState(None, 0, None)
    state.consumed_seq, state.fingerprint = seq, fingerprint
    _save_state(con, integration, consumer, run_id, state)
    con.execute(f'DELETE FROM "{s.STAGE_CHANGES}" WHERE integration = ? AND stage = ? AND seq <= ?',
                [integration, producer, seq])


def fingerprint(con, integration: str, stage: str) -> str | None:
    state = stage_state(con, integration, stage)
    return state.fingerprint if state else None


# -- deleting an integration ------------------------------------------------------------------------

def integrations_in_warehouse(con) -> dict[str, int]:
    """Integration key -> contacts held, for every integration with any row in the warehouse."""
    s.ensure_schema(con)
    keys: set[str] = set()
    for name, _, _ in s.TABLES:
        keys |= {r[0] for r in con.execute(f'SELECT DISTINCT integration FROM "{name}"').fetchall()}
    counts = dict(con.execute(f'SELECT integration, count(*) FROM "{s.CONTACTS}" GROUP BY 1').fetchall())
    return {key: counts.get(key, 0) for key in sorted(keys)}


def delete_integration(con, integration: str) -> dict[str, int]:
    """Remove every row of one integration from every table (contacts, lists, errors, history,
    delta state, bookkeeping, run log), inside the caller's transaction; table -> rows removed."""
    return {name: con.execute(f'DELETE FROM "{name}" WHERE integration = ?', [integration]).fetchone()[0]
            for name, _, _ in s.TABLES}
