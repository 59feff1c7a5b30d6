"""The merged contact directory's tables: all_contacts (one row per person across integrations),
all_contacts_excluded (people one integration keeps and another excludes) and all_contact_changes
(its history). Unlike the per-integration tables they have no ``integration`` column of their own:
each row is one person, whichever integrations describe them.

The merge runs inside DuckDB over the synced contacts of every integration, into a scratch table (of
everyone, or of the people an integration's sync changed); the write compares it with the stored
directory and touches only the people who joined, changed or left.
"""

from __future__ import annotations

from dataclasses import dataclass

from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.table_rows import id_table, utc_now

MERGED = "_merged_directory"
#: The people a merge is restricted to (a temporary table of contact ids), when it is.
PEOPLE = "_directory_people"
#: People several integrations describe, merged at a time.
MERGE_BATCH = 100_000
#: Contact columns that are not merged fields: the key, the per-integration record and bookkeeping.
NOT_FIELDS = ("integration", "contact_id", "source_id", "imported", "run_id", "synced_at")


@dataclass(frozen=True)
class MergeSettings:
    """What the merge needs from the configuration: the integrations merged (in the file's order),
    each field's precedence over them, and whether an exclusion anywhere keeps a person out."""

    keys: list[str]
    orders: dict[str, list[str]]  # every merged field, in column order -> integration keys, first wins
    excluded_anywhere: bool


def contact_fields(con) -> list[str]:
    """The merged fields: the contacts table's columns, built-in and custom, in column order."""
    return [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [s.CONTACTS]).fetchall()
        if r[0] not in NOT_FIELDS]


def _present(field: str, kind: str) -> str:
    # An empty text in a preferred integration does not hide another integration's value.
    return f'"{field}" IS NOT NULL' + (f""" AND "{field}" <> ''""" if kind == "VARCHAR" else "")


def _only(column: str, only: set[str] | None) -> str:
    return "" if only is None else f" AND {column} IN (SELECT id FROM {PEOPLE})"


def merge(con, settings: MergeSettings, only: set[str] | None = None) -> None:
    """Scratch table MERGED: each person's merged row (every field's value and source), from the
    synced contacts of ``settings.keys``; only the people of ``only`` (contact ids), if given."""
    if only is not None:
        id_table(con, PEOPLE, only)
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
                             "current_database() AND schema_name = 'main' AND table_name = ?",
                             [s.CONTACTS]).fetchall())
    fields = list(settings.orders)
    have = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = "
                                      "current_database() AND schema_name = 'main' AND table_name = ?",
                                      [s.ALL_CONTACTS]).fetchall()}
    for field in fields:  # a custom field added to contacts before all_contacts existed
        if field not in have:
            con.execute(f'ALTER TABLE "{s.ALL_CONTACTS}" ADD COLUMN "{field}" {types[field]}')
    # One rank column per distinct order (most fields share the default one).
    orders = sorted({tuple(order) for order in settings.orders.values()})
    rank = {order: f"__rank{i}" for i, order in enumerate(orders)}
    ranks = ", ".join(f"list_position(?::VARCHAR[], integration) AS {rank[order]}" for order in orders)
    picks = ", ".join(
        f'arg_min("{f}", {rank[tuple(settings.orders[f])]}) FILTER (WHERE {_present(f, types[f])}) AS "{f}", '
        f'arg_min(integration, {rank[tuple(settings.orders[f])]}) FILTER (WHERE {_present(f, types[f])}) '
        f'AS "{f}__from"' for f in fields)
    sources = ", ".join(f"""{{'k': ?, 'v': "{field}__from"}}""" for field in fields)
    excluded = (f'AND contact_id NOT IN (SELECT contact_id FROM "{s.EXCLUDED_CONTACTS}" '
                "WHERE list_contains(?::VARCHAR[], integration))") if settings.excluded_anywhere else ""
    kept = f"""SELECT * FROM "{s.CONTACTS}" WHERE list_contains(?::VARCHAR[], integration) {excluded}{_only("contact_id", only)}"""
    kept_params = [settings.keys] + ([settings.keys] if excluded else [])
    con.execute(f"CREATE OR REPLACE TEMP TABLE _directory_shared AS SELECT contact_id FROM ({kept}) "
                "GROUP BY contact_id HAVING count(*) > 1", kept_params)
    # Someone one integration alone describes is that integration's row: no aggregate needed.
    alone = ", ".join(f'CASE WHEN {_present(f, types[f])} THEN "{f}" END AS "{f}", '
                      f'CASE WHEN {_present(f, types[f])} THEN integration END AS "{f}__from"' for f in fields)
    shared = f"""
        SELECT contact_id, {picks}, list_sort(list_distinct(list(integration))) AS integrations
        FROM (SELECT *, {ranks} FROM ({kept}) WHERE contact_id IN (SELECT contact_id FROM _directory_shared)
              AND hash(contact_id) % ? = ?)
        GROUP BY contact_id"""
    finish = f"""
        SELECT contact_id, {", ".join(f'"{f}"' for f in fields)},
               to_json(map_from_entries(list_filter([{sources}], lambda x: x.v IS NOT NULL))) AS sources,
               integrations
        FROM (__ROWS__)"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {MERGED} AS " + finish.replace("__ROWS__", f"""
        SELECT contact_id, {alone}, [integration] AS integrations FROM ({kept})
        WHERE contact_id NOT IN (SELECT contact_id FROM _directory_shared)"""), fields + kept_params)
    # Each shared person's aggregate states hold every field twice: a batch at a time keeps them
    # within DuckDB's memory cap (a million people at once needs several GB).
    people = con.execute("SELECT count(*) FROM _directory_shared").fetchone()[0]
    batches = max(1, -(-people // MERGE_BATCH))
    for batch in range(batches):
        con.execute(f"INSERT INTO {MERGED} " + finish.replace("__ROWS__", shared),
                    fields + [list(order) for order in orders] + kept_params + [batches, batch])
    con.execute("DROP TABLE _directory_shared")


def write_excluded_elsewhere(con, settings: MergeSettings, only: set[str] | None, run_id: str, now) -> None:
    """all_contacts_excluded: people whom one integration keeps and another excludes, with the
    excluding integration, its rule and who keeps them (their rows only, with ``only``)."""
    con.execute(f'DELETE FROM "{s.ALL_CONTACTS_EXCLUDED}" WHERE TRUE{_only("contact_id", only)}')
    if not settings.excluded_anywhere:
        return
    excluded = (f'SELECT * FROM "{s.EXCLUDED_CONTACTS}" WHERE list_contains(?::VARCHAR[], integration)'
                f'{_only("contact_id", only)}')
    con.execute(f"""
        INSERT INTO "{s.ALL_CONTACTS_EXCLUDED}"
        SELECT e.contact_id, e.integration, min(e.rule), any_value(k.kept_by), ?, ?
        FROM ({excluded}) e
        JOIN (SELECT contact_id, list_sort(list_distinct(list(integration))) AS kept_by FROM "{s.CONTACTS}"
              WHERE list_contains(?::VARCHAR[], integration) AND contact_id IN (SELECT contact_id FROM ({excluded}))
              GROUP BY contact_id) k USING (contact_id)
        GROUP BY e.contact_id, e.integration""", [run_id, now, settings.keys, settings.keys, settings.keys])


def _gone(only: set[str] | None) -> str:
    """The people in all_contacts the merge in MERGED removes (call after ``merge``)."""
    return (f'SELECT contact_id FROM "{s.ALL_CONTACTS}" WHERE contact_id NOT IN (SELECT contact_id FROM {MERGED})'
            f'{_only("contact_id", only)}')


def leaving(con, sample: int, only: set[str] | None) -> tuple[int, int, list[str]]:
    """(people in all_contacts now, how many the merge removes, the first ``sample`` of them;
    call after ``merge`` with the same ``only``)."""
    removed = con.execute(f"SELECT count(*) FROM ({_gone(only)})").fetchone()[0]
    first = [r[0] for r in con.execute(f"{_gone(only)} ORDER BY contact_id LIMIT ?", [sample]).fetchall()]
    return count(con), removed, first


def memberships_leaving(con, sample: int, only: set[str] | None) -> tuple[int, int, list[str]]:
    """(list memberships of the merged directory now, how many leave with the people the merge
    removes, the first ``sample`` as "list: person"; call after ``merge`` with the same ``only``)."""
    size = con.execute(f'SELECT count(*) FROM "{s.ALL_CONTACT_LIST_MEMBERS}"').fetchone()[0]
    leaving_rows = f'FROM "{s.ALL_CONTACT_LIST_MEMBERS}" WHERE contact_id IN ({_gone(only)})'
    removed = con.execute(f"SELECT count(*) {leaving_rows}").fetchone()[0]
    first = [f"{name}: {person}" for name, person in con.execute(
        f"SELECT list_name, contact_id {leaving_rows} ORDER BY list_name, contact_id LIMIT ?", [sample]).fetchall()]
    return size, removed, first


def write(con, run_id: str, integration: str, settings: MergeSettings, only: set[str] | None = None) -> dict[str, int]:
    """Apply MERGED to all_contacts (the people who joined, changed or left), append their history,
    and replace all_contacts_excluded (their rows, with ``only``: call after ``merge`` with the same
    ``only``). joined / updated / left -> how many."""
    fields = list(settings.orders)
    now = utc_now()
    pairs = ", ".join(
        f"""{{'field': ?, 'old': CAST(o."{f}" AS VARCHAR), 'new': CAST(n."{f}" AS VARCHAR), """
        f"""'old_source': json_extract_string(o.sources, ?), 'new_source': json_extract_string(n.sources, ?)}}"""
        for f in fields)
    pair_params = [p for f in fields for p in (f, f'$."{f}"', f'$."{f}"')]
    differs = "lambda x: x.old IS DISTINCT FROM x.new OR x.old_source IS DISTINCT FROM x.new_source"
    columns = ", ".join(f'"{c}"' for c in ["contact_id", *fields, "sources", "integrations"])
    stored = f'(SELECT {columns} FROM "{s.ALL_CONTACTS}" WHERE TRUE{_only("contact_id", only)})'
    # Whole rows compared by a 64-bit hash first (a second of work for a million people, where the
    # field by field comparison below takes several): only the people whose row differs get a field
    # list. A changed row keeping its hash is a 1 in 2^64 chance.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _directory_touched AS
        SELECT contact_id FROM (SELECT contact_id, hash({columns}) AS h FROM {MERGED}) n
        FULL OUTER JOIN (SELECT contact_id, hash({columns}) AS h FROM {stored}) o USING (contact_id)
        WHERE n.h IS DISTINCT FROM o.h""")
    touched = "contact_id IN (SELECT contact_id FROM _directory_touched)"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _directory_changes AS
        SELECT coalesce(n.contact_id, o.contact_id) AS contact_id,
               CASE WHEN o.contact_id IS NULL THEN 'joined' WHEN n.contact_id IS NULL THEN 'left'
                    ELSE 'updated' END AS change,
               CASE WHEN o.contact_id IS NOT NULL AND n.contact_id IS NOT NULL THEN to_json(list_concat(
                   list_filter([{pairs}], {differs}),
                   CASE WHEN o.integrations IS DISTINCT FROM n.integrations
                        THEN [{{'field': 'integrations', 'old': CAST(o.integrations AS VARCHAR),
                               'new': CAST(n.integrations AS VARCHAR), 'old_source': NULL::VARCHAR,
                               'new_source': NULL::VARCHAR}}] ELSE [] END)) END AS changes
        FROM (SELECT * FROM {MERGED} WHERE {touched}) n
        FULL OUTER JOIN (SELECT * FROM "{s.ALL_CONTACTS}" WHERE {touched}) o ON o.contact_id = n.contact_id""",
                pair_params)
    con.execute("DROP TABLE _directory_touched")
    con.execute(f'DELETE FROM "{s.ALL_CONTACTS}" WHERE contact_id IN '
                "(SELECT contact_id FROM _directory_changes WHERE change <> 'joined')")
    con.execute(f'INSERT INTO "{s.ALL_CONTACTS}" ({columns}, run_id, synced_at) SELECT {columns}, ?, ? '
                f"FROM {MERGED} WHERE contact_id IN (SELECT contact_id FROM _directory_changes "
                "WHERE change <> 'left')", [run_id, now])
    con.execute(f'INSERT INTO "{s.ALL_CONTACT_CHANGES}" (contact_id, change, changes, merged_by, run_id, '
                "changed_at) SELECT contact_id, change, changes, ?, ?, ? FROM _directory_changes "
                "ORDER BY contact_id", [integration, run_id, now])
    write_excluded_elsewhere(con, settings, only, run_id, now)
    counts = dict(con.execute("SELECT change, count(*) FROM _directory_changes GROUP BY change").fetchall())
    con.execute("DROP TABLE _directory_changes")
    return {change: counts.get(change, 0) for change in ("joined", "updated", "left")}


def integrations_present(con) -> list[str]:
    """The integrations with synced contacts: one deleted (delete-integration) means a full merge."""
    return [r[0] for r in con.execute(f'SELECT DISTINCT integration FROM "{s.CONTACTS}" ORDER BY 1').fetchall()]


def merged_count(con) -> int:
    """How many people the last ``merge`` merged."""
    return con.execute(f"SELECT count(*) FROM {MERGED}").fetchone()[0]


def count(con) -> int:
    return con.execute(f'SELECT count(*) FROM "{s.ALL_CONTACTS}"').fetchone()[0]
