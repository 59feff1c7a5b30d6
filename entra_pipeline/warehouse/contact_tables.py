"""The contact tables: mapped_contacts (every directory person with a usable Unique Contact ID,
as the mapping made them), contacts (those no exclusion rule removed), excluded_contacts, and
contact_changes (who joined, changed or left with each sync).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator

from entra_pipeline.transform import lists, mapping
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import ENTRA
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.table_rows import (count_rows, delete_ids, id_table, insert_rows, replace_rows,
                                                 run_frame, utc_now)

MAPPED_WORK = "_mapped_work"  # per-connection temporary table: the mapping's result before it is written


@dataclass
class MappingSummary:
    """What a mapping produced, for the checks before anything is written: users read, contacts
    made (first of each Unique Contact ID), import issues and a sample of contacts."""

    users_read: int
    contacts: int
    issues: list[ImportIssue]
    sample: list[dict]
    #: With an incremental mapping: the users re-mapped (changed ones, and everyone sharing a
    #: Unique Contact ID with one of them, before or after). None: every user was mapped.
    candidates: set[str] | None = None


def _raw_subset(con, integration: str, raw: str) -> None:
    """TEMP TABLE _raw_subset: the raw people whose ids are in TEMP TABLE _candidates."""
    con.execute(f'CREATE OR REPLACE TEMP TABLE _raw_subset AS SELECT * FROM "{raw}" '
                "WHERE integration = ? AND id IN (SELECT id FROM _candidates)", [integration])


def map_raw_users(con, integration: str, plan: list[mapping.FieldPlan], unique_id: str,
                  imported_fields: list[str], changed: set[str] | None = None,
                  kind: str = ENTRA, *, sample_columns: list[str], sample_size: int = 10) -> MappingSummary:
    """Run the mapping inside DuckDB into a temporary table (nothing is written to the warehouse
    yet) and return what the checks need: counts, import issues and a sample.

    With ``changed`` (user ids changed or removed since the last mapping) only those users are
    mapped again, plus every user sharing a Unique Contact ID with one of them before or after
    the change, so duplicate ranks come out exactly as a full mapping would make them. ``kind``
    is the source type: its raw table and how it ranks duplicates. The sample is the first
    ``sample_size`` contacts by contact id, with the caller's ``sample_columns``."""
    raw = table = s.RAW_PEOPLE[kind]
    candidates = None
    if changed is not None:
        id_table(con, "_candidates", changed)
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
        id_table(con, "_candidates", candidates)
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
    quoted = ", ".join(f'"{c}"' for c in sample_columns)
    sample = [dict(zip(sample_columns, row)) for row in con.execute(
        f"SELECT {quoted} FROM {MAPPED_WORK} WHERE contact_id IS NOT NULL AND _dup_rank = 1 "
        "ORDER BY contact_id LIMIT ?", [sample_size]).fetchall()]
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
        "WHERE contact_id IS NOT NULL AND _dup_rank = 1", [integration, run_id, utc_now()]).fetchone()[0]


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
    return list(stream_for_rules(con, integration, contact_fields, imported_fields, table, source_ids))


#: Contacts fetched at a time by stream_for_rules: memory holds a batch, not the directory.
RULE_BATCH = 10_000


def stream_for_rules(con, integration: str, contact_fields: list[str], imported_fields: list[str],
                     table: str = s.MAPPED_CONTACTS, source_ids: set[str] | None = None) -> Iterator[dict]:
    """read_for_rules, a batch at a time, by contact id: the connection runs nothing else until
    the last contact is read."""
    paths = [f'$."{name}"' for name in imported_fields]  # names are validated field names
    columns = "".join(f', "{name}"' for name in contact_fields)
    only = ""
    if source_ids is not None:
        id_table(con, "_rule_sources", source_ids)
        only = " AND source_id IN (SELECT id FROM _rule_sources)"
    cursor = con.execute(
        f'SELECT contact_id, source_id{columns}, json_extract(imported, ?::VARCHAR[]) '
        f'FROM "{table}" WHERE integration = ?{only} ORDER BY contact_id',
        [paths, integration])
    names = ["contact_id", "source_id", *contact_fields]
    while rows := cursor.fetchmany(RULE_BATCH):
        for row in rows:
            contact = dict(zip(names, row[:-1]))
            contact["imported"] = {name: json.loads(v) if v is not None else None
                                   for name, v in zip(imported_fields, row[-1] or [])}
            yield contact


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
        id_table(con, "_contact_sources", source_ids)
        only = " AND source_id IN (SELECT id FROM _contact_sources)"
    con.execute(f'CREATE OR REPLACE TEMP TABLE _previous_contacts AS SELECT {columns} FROM "{s.CONTACTS}" '
                f"WHERE integration = ?{only}", [integration])
    con.execute(f'DELETE FROM "{s.CONTACTS}" WHERE integration = ?{only}', [integration])
    id_table(con, "_excluded", excluded)
    now = utc_now()
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
    frame = run_frame(rows, ["contact_id", "source_id", "rule"], integration, run_id)
    if source_ids is None:
        return replace_rows(con, s.EXCLUDED_CONTACTS, integration, frame)
    delete_ids(con, s.EXCLUDED_CONTACTS, integration, "source_id", source_ids)
    return insert_rows(con, s.EXCLUDED_CONTACTS, frame)


def excluded_ids(con, integration: str, source_ids: set[str] | None) -> set[str]:
    """Contact ids of the integration's excluded contacts (of ``source_ids``, if given)."""
    only = ""
    if source_ids is not None:
        id_table(con, "_excluded_of", source_ids)
        only = " AND source_id IN (SELECT id FROM _excluded_of)"
    return {r[0] for r in con.execute(f'SELECT contact_id FROM "{s.EXCLUDED_CONTACTS}" WHERE integration = ?{only}',
                                      [integration]).fetchall()}


def changed_people(con, integration: str, run_id: str) -> set[str]:
    """Contact ids whose contact row ``run_id`` added, changed or removed (its contact_changes)."""
    return {r[0] for r in con.execute(f'SELECT contact_id FROM "{s.CONTACT_CHANGES}" WHERE integration = ? '
                                      "AND run_id = ?", [integration, run_id]).fetchall()}


def contacts_of(con, integration: str, source_ids: set[str]) -> set[str]:
    """Contact ids of the current contacts that come from ``source_ids``."""
    id_table(con, "_of_sources", source_ids)
    return {r[0] for r in con.execute(f'SELECT contact_id FROM "{s.CONTACTS}" WHERE integration = ? '
                                      "AND source_id IN (SELECT id FROM _of_sources)", [integration]).fetchall()}


def people(con, integration: str, user_ids: Iterable[str] | None = None) -> lists.People:
    """What the contact stages decided about each directory user (only ``user_ids``, if given;
    see transform.lists.People)."""
    only = {"source_id": "", "record": "", "id": ""}
    if user_ids is not None:
        id_table(con, "_people", user_ids)
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


def contact_ids(con, integration: str) -> set[str]:
    """Every current contact id of an integration: the deletion guard's "before"."""
    s.ensure_schema(con)
    return {r[0] for r in con.execute(f'SELECT contact_id FROM "{s.CONTACTS}" WHERE integration = ?',
                                      [integration]).fetchall()}


def change_counts(con, integration: str, run_id: str) -> dict[str, int]:
    """joined / updated / left -> how many contact_changes rows ``run_id`` appended."""
    return dict(con.execute(f'SELECT change, count(*) FROM "{s.CONTACT_CHANGES}" WHERE integration = ? '
                            "AND run_id = ? GROUP BY change", [integration, run_id]).fetchall())
