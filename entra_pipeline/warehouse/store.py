"""Reading and writing the contact warehouse (DuckDB). No Dagster here.

Each stage's ``write_*`` replaces that stage's rows for one integration, together with the stage's
import errors, inside the caller's transaction (see ``transaction``): either all of a stage's
output for an integration changes, or none of it does.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator

import pandas as pd

from entra_pipeline.transform import lists, mapping
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.warehouse import schema as s


@contextmanager
def transaction(con) -> Iterator:
    """BEGIN ... COMMIT, or ROLLBACK on any exception (including KeyboardInterrupt)."""
    con.execute("BEGIN TRANSACTION")
    try:
        s.ensure_schema(con)
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _replace(con, table: str, integration: str, frame: pd.DataFrame) -> int:
    con.execute(f'DELETE FROM "{table}" WHERE integration = ?', [integration])
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


def replace_issues(con, integration: str, stage: str, run_id: str, issues: Iterable[ImportIssue]) -> int:
    """Replace one stage's import errors for an integration."""
    con.execute(f'DELETE FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ?', [integration, stage])
    rows = [(integration, run_id, i.stage, i.record, i.field, i.code, i.message, _now()) for i in issues]
    if rows:
        con.executemany(
            f'INSERT INTO "{s.IMPORT_ERRORS}" (integration, run_id, stage, record, field, code, message, '
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


# -- raw -------------------------------------------------------------------------------------

def write_raw_users(con, integration: str, run_id: str, users: list[dict]) -> int:
    rows = [
        {"id": u["id"], "user_principal_name": u.get("userPrincipalName"), "display_name": u.get("displayName"),
         "mail": u.get("mail"), "data": json.dumps(u, ensure_ascii=False)}
        for u in users
    ]
    frame = _frame(rows, ["id", "user_principal_name", "display_name", "mail", "data"], integration, run_id)
    return _replace(con, s.RAW_GRAPH_USERS, integration, frame)


def write_raw_groups(con, integration: str, run_id: str, groups: list[dict], kinds: dict[str, str],
                     edges: dict[str, list[tuple[str, str]]]) -> tuple[int, int]:
    group_rows = [
        {"id": g["id"], "display_name": g.get("displayName"), "mail": g.get("mail"), "kind": kinds[g["id"]],
         "mail_enabled": g.get("mailEnabled"), "security_enabled": g.get("securityEnabled"),
         "group_types": list(g.get("groupTypes") or []), "data": json.dumps(g, ensure_ascii=False)}
        for g in groups
    ]
    member_rows = [
        {"group_id": group_id, "member_id": member_id, "member_type": member_type}
        for group_id, members in edges.items()
        for member_type, member_id in members
    ]
    n_groups = _replace(con, s.RAW_GRAPH_GROUPS, integration, _frame(
        group_rows, ["id", "display_name", "mail", "kind", "mail_enabled", "security_enabled", "group_types", "data"],
        integration, run_id))
    n_members = _replace(con, s.RAW_GRAPH_GROUP_MEMBERS, integration, _frame(
        member_rows, ["group_id", "member_id", "member_type"], integration, run_id))
    return n_groups, n_members


def read_raw_groups(con, integration: str) -> tuple[list[dict], dict[str, list[tuple[str, str]]]]:
    groups = [json.loads(r[0]) for r in con.execute(
        f'SELECT data FROM "{s.RAW_GRAPH_GROUPS}" WHERE integration = ? ORDER BY display_name, id',
        [integration]).fetchall()]
    edges: dict[str, list[tuple[str, str]]] = {g["id"]: [] for g in groups}
    for group_id, member_type, member_id in con.execute(
        f'SELECT group_id, member_type, member_id FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ?',
        [integration],
    ).fetchall():
        edges.setdefault(group_id, []).append((member_type, member_id))
    return groups, edges


# -- contacts --------------------------------------------------------------------------------



MAPPED_WORK = "_mapped_work"  # per-connection temporary table: the mapping's result before it is written


@dataclass
class MappingSummary:
    users_read: int
    contacts: int
    issues: list[ImportIssue]
    sample: list[dict]


def map_raw_users(con, integration: str, plan: list[mapping.FieldPlan], unique_id: str,
                  imported_fields: list[str]) -> MappingSummary:
    """Run the mapping inside DuckDB into a temporary table (nothing is written to the warehouse
    yet) and return what the checks need: counts, import issues and a sample."""
    sql, params = mapping.mapping_query(plan, unique_id, imported_fields, integration, s.RAW_GRAPH_USERS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {MAPPED_WORK} AS {sql}", params)
    users, contacts = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE contact_id IS NOT NULL AND _dup_rank = 1) FROM {MAPPED_WORK}"
    ).fetchone()
    issues = mapping.issues_from_rows(plan, unique_id, con.execute(
        mapping.problems_query(plan, unique_id, MAPPED_WORK)).fetchall())
    columns = ["contact_id", "display_name", "department", "country"]
    sample = [dict(zip(columns, row)) for row in con.execute(
        f"SELECT {', '.join(columns)} FROM {MAPPED_WORK} WHERE contact_id IS NOT NULL AND _dup_rank = 1 "
        "ORDER BY contact_id LIMIT 10").fetchall()]
    return MappingSummary(users, contacts, issues, sample)


def write_mapped_contacts(con, integration: str, run_id: str, plan: list[mapping.FieldPlan],
                          custom_fields: dict[str, str]) -> int:
    """Replace an integration's mapped contacts with the result of ``map_raw_users`` on this
    connection; custom fields (name -> type) become typed columns."""
    s.ensure_custom_columns(con, custom_fields)
    con.execute(f'DELETE FROM "{s.MAPPED_CONTACTS}" WHERE integration = ?', [integration])
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
                   table: str = s.MAPPED_CONTACTS) -> list[dict]:
    """Contacts with only what rules test: the named contact fields and the named imported fields
    (parsed from the ``imported`` JSON by DuckDB, not in Python)."""
    paths = [f'$."{name}"' for name in imported_fields]  # names are validated field names
    columns = "".join(f', "{name}"' for name in contact_fields)
    rows = con.execute(
        f'SELECT contact_id, source_id{columns}, json_extract(imported, ?::VARCHAR[]) '
        f'FROM "{table}" WHERE integration = ? ORDER BY contact_id',
        [paths, integration]).fetchall()
    contacts = []
    for row in rows:
        contact = dict(zip(["contact_id", "source_id", *contact_fields], row[:-1]))
        contact["imported"] = {name: json.loads(v) if v is not None else None
                               for name, v in zip(imported_fields, row[-1] or [])}
        contacts.append(contact)
    return contacts


def write_contacts_except(con, integration: str, run_id: str, excluded: Iterable[str]) -> int:
    """Replace an integration's contacts with its mapped contacts minus ``excluded`` contact ids,
    copied inside DuckDB (every column, custom ones included), and append what changed to
    ``contact_changes``."""
    # The columns both tables have (custom fields are added to both; this survives a hand-made one).
    shared = [name for (name,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND column_name IN "
        "(SELECT column_name FROM information_schema.columns WHERE table_name = ?) ORDER BY ordinal_position",
        [s.MAPPED_CONTACTS, s.CONTACTS]).fetchall() if name not in ("run_id", "synced_at")]
    columns = ", ".join(f'"{name}"' for name in shared)
    con.execute(f'CREATE OR REPLACE TEMP TABLE _previous_contacts AS SELECT {columns} FROM "{s.CONTACTS}" '
                "WHERE integration = ?", [integration])
    con.execute(f'DELETE FROM "{s.CONTACTS}" WHERE integration = ?', [integration])
    con.register("_excluded", pd.DataFrame({"contact_id": list(excluded)}, dtype=object))
    now = _now()
    count = con.execute(
        f'INSERT INTO "{s.CONTACTS}" ({columns}, run_id, synced_at) SELECT {columns}, ?, ? '
        f'FROM "{s.MAPPED_CONTACTS}" WHERE integration = ? '
        f"AND contact_id NOT IN (SELECT contact_id FROM _excluded)",
        [run_id, now, integration]).fetchone()[0]
    con.unregister("_excluded")
    _record_changes(con, integration, run_id, now, [c for c in shared if c not in ("integration", "contact_id",
                                                                                   "imported")])
    con.execute("DROP TABLE _previous_contacts")
    return count


def _record_changes(con, integration: str, run_id: str, now, fields: list[str]) -> None:
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
        FROM (SELECT * FROM "{s.CONTACTS}" WHERE integration = ?) n
        FULL OUTER JOIN _previous_contacts o ON o.contact_id = n.contact_id
        WHERE o.contact_id IS NULL OR n.contact_id IS NULL
           OR len(list_filter([{pairs}], lambda x: x.old IS DISTINCT FROM x.new)) > 0""",
                [integration, run_id, now, integration])


def write_exclusions(con, integration: str, run_id: str, excluded: list[tuple[dict, str]]) -> int:
    rows = [{"contact_id": c["contact_id"], "source_id": c["source_id"], "rule": rule} for c, rule in excluded]
    return _replace(con, s.EXCLUDED_CONTACTS, integration,
                    _frame(rows, ["contact_id", "source_id", "rule"], integration, run_id))


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


def write_available_groups(con, integration: str, run_id: str, rows: list[dict]) -> int:
    columns = ["group_id", "display_name", "mail", "kind", "direct_members", "selected", "same_name_groups"]
    return _replace(con, s.AVAILABLE_GROUPS, integration, _frame(rows, columns, integration, run_id))


def previous_lists(con, integration: str) -> dict[str, str]:
    """List id -> display name of the integration's lists as last written."""
    return dict(con.execute(f'SELECT list_id, display_name FROM "{s.DISTRIBUTION_LISTS}" WHERE integration = ?',
                            [integration]).fetchall())


def people(con, integration: str) -> lists.People:
    """What the contact stages decided about each directory user (see transform.lists.People)."""
    contacts = dict(con.execute(
        f'SELECT source_id, contact_id FROM "{s.CONTACTS}" WHERE integration = ?', [integration]).fetchall())
    excluded = dict(con.execute(
        f'SELECT source_id, rule FROM "{s.EXCLUDED_CONTACTS}" WHERE integration = ?', [integration]).fetchall())
    duplicates = {r[0] for r in con.execute(
        f'SELECT record FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND stage = ? AND code = ?',
        [integration, mapping.STAGE, mapping.DUPLICATE_UNIQUE_ID]).fetchall()}
    read = {r[0] for r in con.execute(
        f'SELECT id FROM "{s.RAW_GRAPH_USERS}" WHERE integration = ?', [integration]).fetchall()}
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
