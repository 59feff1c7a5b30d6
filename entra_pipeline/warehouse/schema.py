"""The contact warehouse's tables. Every table has an ``integration`` column: one integration's
rows are replaced as a whole by the stage that owns them, never another integration's. The merged
directory's tables (all_contacts and its history) are the exception: a row is a person, whichever
integrations describe them.

The warehouse is a read-only mirror of the directory: lists and contacts change in Entra ID and
arrive here with the next sync. Rows written by hand are overwritten.
"""

from __future__ import annotations

from entra_pipeline.transform.fields import BOOLEAN, BUILTIN_FIELDS, DATE, ENTRA, NUMBER, TEXT, WORKDAY

RAW_GRAPH_USERS = "raw_graph_users"
RAW_GRAPH_GROUPS = "raw_graph_groups"
RAW_GRAPH_GROUP_MEMBERS = "raw_graph_group_members"
RAW_WORKDAY_WORKERS = "raw_workday_workers"
MAPPED_CONTACTS = "mapped_contacts"
CONTACTS = "contacts"
EXCLUDED_CONTACTS = "excluded_contacts"
DISTRIBUTION_LISTS = "distribution_lists"
DISTRIBUTION_LIST_MEMBERS = "distribution_list_members"
DISTRIBUTION_LIST_NON_MEMBERS = "distribution_list_non_members"
AVAILABLE_GROUPS = "available_groups"
IMPORT_ERRORS = "import_errors"
DIRECTORY_FIELDS_READ = "directory_fields_read"
CONTACT_CHANGES = "contact_changes"
DELTA_STATE = "delta_state"
SYNC_RUN_STAGES = "sync_run_stages"
SYNC_RUNS = "sync_runs"  # a view over sync_run_stages
SYNC_PREVIEW = "sync_preview"
MAPPED_USER_IDS = "mapped_user_ids"
STAGE_STATE = "stage_state"
STAGE_CHANGES = "stage_changes"
ALL_CONTACTS = "all_contacts"
ALL_CONTACTS_EXCLUDED = "all_contacts_excluded"
ALL_CONTACT_CHANGES = "all_contact_changes"
ALL_CONTACT_SOURCES = "all_contact_sources"  # a view over all_contacts
ALL_CONTACT_LIST_MEMBERS = "all_contact_list_members"  # a view
PEOPLE_STATUS = "people_status"  # a view

# The raw people table of each source type: what the mapping reads.
RAW_PEOPLE = {ENTRA: RAW_GRAPH_USERS, WORKDAY: RAW_WORKDAY_WORKERS}

SQL_TYPES = {TEXT: "VARCHAR", NUMBER: "DOUBLE", DATE: "DATE", BOOLEAN: "BOOLEAN"}

# Contact columns shared by mapped_contacts and contacts, in order (see transform.fields). Custom
# fields are added as typed columns by ensure_custom_columns.
CONTACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("contact_id", "VARCHAR NOT NULL"),
    ("source_id", "VARCHAR NOT NULL"),
    *((name, SQL_TYPES[kind]) for name, kind in BUILTIN_FIELDS.items()),
    ("imported", "JSON"),
)

_RUN = ("run_id VARCHAR NOT NULL", "synced_at TIMESTAMPTZ NOT NULL")


def _contact_table(name: str, comment: str) -> tuple[str, tuple[str, ...], str]:
    return name, ("integration VARCHAR NOT NULL", *(f"{c} {t}" for c, t in CONTACT_COLUMNS), *_RUN), comment


TABLES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (RAW_GRAPH_USERS, (
        "integration VARCHAR NOT NULL", "id VARCHAR NOT NULL", "user_principal_name VARCHAR",
        "display_name VARCHAR", "mail VARCHAR", "data JSON NOT NULL", *_RUN,
    ), "Directory users as Microsoft Graph returned them (only the selected properties), one row per user."),
    (RAW_GRAPH_GROUPS, (
        "integration VARCHAR NOT NULL", "id VARCHAR NOT NULL", "display_name VARCHAR", "mail VARCHAR",
        "kind VARCHAR NOT NULL", "mail_enabled BOOLEAN", "security_enabled BOOLEAN",
        "group_types VARCHAR[]", "data JSON NOT NULL", *_RUN,
    ), "Directory groups as Graph returned them; kind is microsoft365, mail_enabled_security, distribution or security."),
    (RAW_GRAPH_GROUP_MEMBERS, (
        "integration VARCHAR NOT NULL", "group_id VARCHAR NOT NULL", "member_id VARCHAR NOT NULL",
        "member_type VARCHAR NOT NULL", *_RUN,
    ), "Direct group memberships (member_type user, group, orgContact, device, servicePrincipal, ...)."),
    (RAW_WORKDAY_WORKERS, (
        "integration VARCHAR NOT NULL", "id VARCHAR NOT NULL", "data JSON NOT NULL", *_RUN,
    ), "Workday workers as the integration's custom report (RaaS) returned them, one row per worker: id is "
       "the value of the integration's id_field (Employee_ID by default), data the report entry keyed by column "
       "alias (empty values are absent). Replaced whole by every sync."),
    _contact_table(MAPPED_CONTACTS, "Every directory user with a usable Unique Contact ID, mapped to contact fields, before exclusions."),
    _contact_table(CONTACTS, "The synced contacts: mapped contacts that no exclusion rule removed."),
    (EXCLUDED_CONTACTS, (
        "integration VARCHAR NOT NULL", "contact_id VARCHAR NOT NULL", "source_id VARCHAR NOT NULL",
        "rule VARCHAR NOT NULL", *_RUN,
    ), "Mapped contacts left out by an exclusion rule, with the first rule that matched."),
    (DISTRIBUTION_LISTS, (
        "integration VARCHAR NOT NULL", "list_id VARCHAR NOT NULL", "source_group_id VARCHAR",
        "display_name VARCHAR", "mail VARCHAR", "kind VARCHAR NOT NULL", "member_count INTEGER NOT NULL",
        "users_not_contacts INTEGER NOT NULL", "non_user_members INTEGER NOT NULL",
        "non_user_member_types JSON", "nested_groups INTEGER NOT NULL", *_RUN,
        "users_excluded INTEGER", "users_without_contact_id INTEGER",
    ), "Distribution lists: selected groups (kind microsoft365, mail_enabled_security, distribution), custom lists (kind custom) and generated lists, one per value of a field (kind generated). users_not_contacts = users_excluded (by a rule) + users_without_contact_id; distribution_list_non_members says who and why."),
    (DISTRIBUTION_LIST_NON_MEMBERS, (
        "integration VARCHAR NOT NULL", "list_id VARCHAR NOT NULL", "object_id VARCHAR NOT NULL",
        "object_type VARCHAR NOT NULL", "reason VARCHAR NOT NULL", *_RUN,
    ), "Who is in a list's group (transitively) but not on the list, and why: excluded by a rule, no usable Unique Contact ID, a duplicate ID, or not a user."),
    (AVAILABLE_GROUPS, (
        "integration VARCHAR NOT NULL", "group_id VARCHAR NOT NULL", "display_name VARCHAR", "mail VARCHAR",
        "kind VARCHAR NOT NULL", "direct_members INTEGER NOT NULL", "selected BOOLEAN NOT NULL",
        "same_name_groups INTEGER NOT NULL", *_RUN,
    ), "Every group that can be selected as a distribution list (Microsoft 365, mail-enabled security, distribution), whether it is selected, and how many offered groups share its display name."),
    (DISTRIBUTION_LIST_MEMBERS, (
        "integration VARCHAR NOT NULL", "list_id VARCHAR NOT NULL", "contact_id VARCHAR NOT NULL", *_RUN,
    ), "Contacts on each list: transitive group members (nested groups flattened) that are contacts."),
    (IMPORT_ERRORS, (
        "integration VARCHAR NOT NULL", "run_id VARCHAR NOT NULL", "stage VARCHAR NOT NULL",
        "record VARCHAR", "field VARCHAR", "code VARCHAR NOT NULL", "message VARCHAR NOT NULL",
        "created_at TIMESTAMPTZ NOT NULL",
    ), "Per-record problems found by each stage of the latest sync of each integration."),
    (CONTACT_CHANGES, (
        "integration VARCHAR NOT NULL", "contact_id VARCHAR NOT NULL", "change VARCHAR NOT NULL",
        "changes JSON", "run_id VARCHAR NOT NULL", "changed_at TIMESTAMPTZ NOT NULL",
    ), "History of the synced contacts, appended by every sync that writes them: change is joined, updated "
       "or left; for updates, changes lists each changed field with its old and new value (as text)."),
    (DELTA_STATE, (
        "integration VARCHAR NOT NULL", "resource VARCHAR NOT NULL", "delta_link VARCHAR NOT NULL",
        "fields VARCHAR[] NOT NULL", "full_round_at TIMESTAMPTZ NOT NULL", *_RUN,
    ), "Where the next incremental read of each integration's users and groups starts: Graph's deltaLink, "
       "written in the same transaction as the raw rows it describes; fields are the properties the round "
       "selected, full_round_at when the last full round ran."),
    (SYNC_RUN_STAGES, (
        "integration VARCHAR NOT NULL", "run_id VARCHAR NOT NULL", "stage VARCHAR NOT NULL",
        "started_at TIMESTAMPTZ NOT NULL", "finished_at TIMESTAMPTZ NOT NULL",
        "read_mode VARCHAR", "read_reason VARCHAR", "changes_read INTEGER", "added INTEGER",
        "updated INTEGER", "removed INTEGER", "graph_requests INTEGER", "graph_bytes BIGINT",
        "list_members_removed INTEGER",
    ), "One row per committed stage of every sync run, written in the stage's own transaction (a failed or "
       "blocked stage writes nothing, here included: see the Dagster run for why); read_mode full or incremental with its reason for the raw stages; added/updated/removed "
       "are users or groups for the raw stages, contacts for filtered_contacts, list memberships for "
       "distribution_lists, people of the merged directory for all_contacts; list_members_removed: the list "
       "memberships filtered_contacts took away with the contacts it removed (for all_contacts: the memberships of "
       "all_contact_list_members that left with the people it removed)."),
    (SYNC_PREVIEW, (
        "integration VARCHAR NOT NULL", "run_id VARCHAR NOT NULL", "change VARCHAR NOT NULL",
        "contact_id VARCHAR", "list_id VARCHAR", "details JSON", "created_at TIMESTAMPTZ NOT NULL",
    ), "The latest preview (dry run) of each integration: what a sync would change, without changing it. "
       "change is contact_joined, contact_updated (details: each field's old and new value), contact_left, "
       "contact_excluded, contact_no_longer_excluded, list_added, list_removed, list_member_added, "
       "list_member_removed, or directory_joined, directory_updated (details: each field's old and new value and "
       "source) or directory_left for the merged directory (all_contacts); plus one row per blocking check the sync would fail (check_would_block)."),
    (MAPPED_USER_IDS, (
        "integration VARCHAR NOT NULL", "source_id VARCHAR NOT NULL", "contact_id VARCHAR NOT NULL",
    ), "Every directory user's Unique Contact ID as the mapping made it, duplicates included: an incremental "
       "mapping re-ranks everyone sharing an ID with a changed user."),
    (STAGE_STATE, (
        "integration VARCHAR NOT NULL", "stage VARCHAR NOT NULL", "consumed_seq BIGINT", "produced_seq BIGINT",
        "fingerprint VARCHAR", *_RUN,
    ), "Bookkeeping of incremental stages: how far each stage has consumed the change log of the stage "
       "before it, how far its own log goes, and a fingerprint of the configuration its rows were made with "
       "(a different one means a full recompute)."),
    (STAGE_CHANGES, (
        "integration VARCHAR NOT NULL", "stage VARCHAR NOT NULL", "seq BIGINT NOT NULL", "object_id VARCHAR",
    ), "Change log between stages: the directory object ids whose rows a stage changed, per write (seq); "
       "object_id NULL means every row may have changed. Pruned once the next stage has consumed it."),
    (ALL_CONTACTS, (
        "contact_id VARCHAR NOT NULL", *(f"{c} {t}" for c, t in CONTACT_COLUMNS[2:-1]),
        "sources JSON NOT NULL", "integrations VARCHAR[] NOT NULL", *_RUN,
    ), "The merged contact directory: one row per Unique Contact ID across every integration. Each field's "
       "value comes from the first integration in its precedence (contacts_directory.precedence) that has one; "
       "sources says which integration gave each field, integrations those the person is a contact in. A person "
       "any integration excludes is left out (see all_contacts_excluded) unless contacts_directory."
       "excluded_anywhere is false."),
    (ALL_CONTACTS_EXCLUDED, (
        "contact_id VARCHAR NOT NULL", "excluded_by VARCHAR NOT NULL", "rule VARCHAR NOT NULL",
        "kept_by VARCHAR[] NOT NULL", *_RUN,
    ), "People whom some integrations keep (kept_by) and another excludes (excluded_by, with its rule): with "
       "contacts_directory.excluded_anywhere (the default) they are not in all_contacts."),
    (ALL_CONTACT_CHANGES, (
        "contact_id VARCHAR NOT NULL", "change VARCHAR NOT NULL", "changes JSON", "merged_by VARCHAR NOT NULL",
        "run_id VARCHAR NOT NULL", "changed_at TIMESTAMPTZ NOT NULL",
    ), "History of the merged directory: change is joined, updated or left; for updates, changes lists each "
       "changed field with its old and new value and source (field integrations: the integrations the person "
       "is in). merged_by is the integration whose sync merged the change."),
    (DIRECTORY_FIELDS_READ, (
        "integration VARCHAR NOT NULL", "stage VARCHAR NOT NULL", "fields VARCHAR[] NOT NULL", *_RUN,
    ), "Which directory fields each stage's current rows carry, so a stage never applies a mapping or "
       "exclusion to fields that were not read."),
)


#: The tables whose rows belong to one integration each (the merged directory's do not).
INTEGRATION_TABLES = tuple(t for t in TABLES if "integration VARCHAR NOT NULL" in t[1])
INTEGRATION_TABLE_NAMES = frozenset(name for name, _, _ in INTEGRATION_TABLES)

# One row per sync run and integration, from its stages' rows.
SYNC_RUNS_VIEW = f"""
CREATE OR REPLACE VIEW "{SYNC_RUNS}" AS
SELECT integration, run_id,
       min(started_at) AS started_at, max(finished_at) AS finished_at,
       round(epoch(max(finished_at) - min(started_at)), 3) AS seconds,
       string_agg(stage, ', ' ORDER BY started_at) AS stages_committed,
       -- A preview reads the directory (its raw stages commit) but writes no contact or list.
       CASE WHEN bool_or(stage = '{SYNC_PREVIEW}') THEN 'preview' ELSE 'sync' END AS run_kind,
       any_value(read_mode) FILTER (WHERE stage IN ('raw_graph_users', 'raw_workday_workers')) AS read_mode,
       any_value(read_reason) FILTER (WHERE stage IN ('raw_graph_users', 'raw_workday_workers')) AS read_reason,
       sum(changes_read) FILTER (WHERE stage LIKE 'raw_%') AS directory_changes_read,
       any_value(added) FILTER (WHERE stage = 'filtered_contacts') AS contacts_added,
       any_value(updated) FILTER (WHERE stage = 'filtered_contacts') AS contacts_updated,
       any_value(removed) FILTER (WHERE stage = 'filtered_contacts') AS contacts_removed,
       any_value(added) FILTER (WHERE stage = 'distribution_lists') AS list_members_added,
       -- Memberships leave with the contacts that leave (filtered_contacts) and with list changes.
       CASE WHEN count(*) FILTER (WHERE stage IN ('filtered_contacts', 'distribution_lists')) > 0
            THEN coalesce(any_value(list_members_removed) FILTER (WHERE stage = 'filtered_contacts'), 0)
                 + coalesce(any_value(removed) FILTER (WHERE stage = 'distribution_lists'), 0)
       END AS list_members_removed,
       any_value(added) FILTER (WHERE stage = 'all_contacts') AS directory_joined,
       any_value(updated) FILTER (WHERE stage = 'all_contacts') AS directory_updated,
       any_value(removed) FILTER (WHERE stage = 'all_contacts') AS directory_left,
       any_value(list_members_removed) FILTER (WHERE stage = 'all_contacts') AS directory_list_members_removed,
       sum(graph_requests) AS graph_requests, sum(graph_bytes) AS graph_bytes
FROM "{SYNC_RUN_STAGES}" GROUP BY integration, run_id
"""
SYNC_RUNS_COMMENT = ("One row per sync run and integration (a view over sync_run_stages): a sync or a preview "
                     "(run_kind), full or incremental, contacts and list memberships added/updated/removed, people who "
                     "joined, changed or left the merged directory, Graph "
                     "requests and duration.")


# The merged directory as rows an analyst filters: one row per person and field, with its source.
ALL_CONTACT_SOURCES_VIEW = f"""
CREATE OR REPLACE VIEW "{ALL_CONTACT_SOURCES}" AS
SELECT contact_id, unnest(json_keys(sources)) AS field,
       json_extract_string(sources, '$."' || unnest(json_keys(sources)) || '"') AS integration
FROM "{ALL_CONTACTS}"
"""
ALL_CONTACT_SOURCES_COMMENT = "Which integration gave each field of each merged contact (a view over all_contacts.sources)."

# The lists' members as merged contacts: a person left out of all_contacts is on no list here.
ALL_CONTACT_LIST_MEMBERS_VIEW = f"""
CREATE OR REPLACE VIEW "{ALL_CONTACT_LIST_MEMBERS}" AS
SELECT m.integration, m.list_id, l.display_name AS list_name, l.kind AS list_kind, a.contact_id, a.email,
       a.display_name
FROM "{DISTRIBUTION_LIST_MEMBERS}" m
JOIN "{DISTRIBUTION_LISTS}" l ON l.integration = m.integration AND l.list_id = m.list_id
JOIN "{ALL_CONTACTS}" a ON a.contact_id = m.contact_id
"""
ALL_CONTACT_LIST_MEMBERS_COMMENT = ("Every list's members as merged contacts (all_contacts): lists keep their "
                                    "integration; a person the merged directory leaves out is on none.")

# Everyone each integration read, and what became of them: behind `explain`.
PEOPLE_STATUS_VIEW = f"""
CREATE OR REPLACE VIEW "{PEOPLE_STATUS}" AS
WITH people AS (
    SELECT integration, id AS source_id, coalesce(display_name, user_principal_name) AS name,
           lower(trim(mail)) AS mail, data->>'employeeId' AS employee_id
    FROM "{RAW_GRAPH_USERS}"
    UNION ALL
    SELECT integration, id, nullif(trim(concat_ws(' ', data->>'First_Name', data->>'Last_Name')), ''),
           lower(trim(data->>'Email_Address')), id
    FROM "{RAW_WORKDAY_WORKERS}"
), problems AS (
    SELECT integration, record, min(code) AS code, min(message) AS message FROM "{IMPORT_ERRORS}"
    WHERE stage = '{MAPPED_CONTACTS}' AND code IN ('missing_unique_id', 'invalid_unique_id', 'duplicate_unique_id')
    GROUP BY integration, record
)
SELECT p.integration, p.source_id,
       coalesce(m.display_name, nullif(trim(concat_ws(' ', m.first_name, m.last_name)), ''), p.name) AS name,
       coalesce(m.contact_id, p.mail) AS contact_id, coalesce(m.employee_id, p.employee_id) AS employee_id,
       CASE WHEN c.source_id IS NOT NULL THEN 'contact' WHEN e.source_id IS NOT NULL THEN 'excluded'
            WHEN x.code IS NOT NULL THEN x.code WHEN m.source_id IS NOT NULL THEN 'mapped'
            ELSE 'not_mapped' END AS status,
       e.rule, x.message AS problem
FROM people p
LEFT JOIN "{MAPPED_CONTACTS}" m ON m.integration = p.integration AND m.source_id = p.source_id
LEFT JOIN "{CONTACTS}" c ON c.integration = p.integration AND c.source_id = p.source_id
LEFT JOIN "{EXCLUDED_CONTACTS}" e ON e.integration = p.integration AND e.source_id = p.source_id
LEFT JOIN problems x ON x.integration = p.integration AND x.record = p.source_id
"""
PEOPLE_STATUS_COMMENT = ("Everyone each integration read (directory users, Workday workers) and what became of them: "
                         "status contact, excluded (by rule), missing_unique_id, invalid_unique_id or duplicate_unique_id (problem says "
                         "why), mapped (not filtered yet) or not_mapped (not mapped yet).")

#: Each view: its name, a column that only its current definition has, its SQL and its comment.
VIEWS = ((SYNC_RUNS, "directory_list_members_removed", SYNC_RUNS_VIEW, SYNC_RUNS_COMMENT),
         (ALL_CONTACT_SOURCES, "field", ALL_CONTACT_SOURCES_VIEW, ALL_CONTACT_SOURCES_COMMENT),
         (ALL_CONTACT_LIST_MEMBERS, "list_name", ALL_CONTACT_LIST_MEMBERS_VIEW, ALL_CONTACT_LIST_MEMBERS_COMMENT),
         (PEOPLE_STATUS, "problem", PEOPLE_STATUS_VIEW, PEOPLE_STATUS_COMMENT))


def schema_current(con) -> bool:
    """Every table with its comment and built-in columns, and the view, already exist."""
    columns = set(con.execute("SELECT table_name, column_name FROM duckdb_columns() "
                              "WHERE database_name = current_database() AND schema_name = 'main'").fetchall())
    comments = dict(con.execute("SELECT table_name, comment FROM duckdb_tables() "
                                "WHERE database_name = current_database() AND schema_name = 'main'").fetchall())
    return (all(comments.get(name) == comment and all((name, c.split()[0]) in columns for c in cols)
                for name, cols, comment in TABLES)
            and all((view, column) in columns for view, column, _, _ in VIEWS))


def ensure_schema(con) -> None:
    """Create missing tables and built-in columns (idempotent; safe at the start of every write;
    two catalog queries when nothing is missing)."""
    if schema_current(con):
        return
    for name, columns, comment in TABLES:
        con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" ({", ".join(columns)})')
        con.execute(f"COMMENT ON TABLE \"{name}\" IS '{comment.replace(chr(39), chr(39) * 2)}'")
    # A warehouse made by an older version gains the columns added since (nullable ones only:
    # existing rows cannot fill a NOT NULL column).
    for name, columns, _ in TABLES:
        for column in columns:
            if "NOT NULL" not in column:
                con.execute(f'ALTER TABLE "{name}" ADD COLUMN IF NOT EXISTS {column}')
    for view, _, sql, comment in VIEWS:
        con.execute(sql)
        con.execute(f"COMMENT ON VIEW \"{view}\" IS '{comment.replace(chr(39), chr(39) * 2)}'")


def custom_column_conflicts(con, fields: dict[str, str]) -> list[str]:
    """Custom fields (name -> Text/Number/Date) whose warehouse column already has another type."""
    ensure_schema(con)
    problems = []
    for table in (MAPPED_CONTACTS, CONTACTS, ALL_CONTACTS):
        existing = dict(con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall())
        for name, kind in fields.items():
            if name in existing and existing[name] != SQL_TYPES[kind]:
                problems.append(f"custom field {name!r} is {kind} in the configuration but column {table}.{name} "
                                f"is {existing[name]} (a field's type cannot change: give the field a new name)")
    return problems


def ensure_custom_columns(con, fields: dict[str, str]) -> None:
    """Add a typed column per custom field (name -> Text/Number/Date) to both contact tables.

    Names are validated by the configuration (lower case, digits, _). A column that exists with
    another type is an error (see ``custom_column_conflicts``), never silently converted: other
    integrations and analysts' queries may rely on it.
    """
    problems = custom_column_conflicts(con, fields)
    if problems:
        raise ValueError(problems[0])
    for table in (MAPPED_CONTACTS, CONTACTS, ALL_CONTACTS):
        for name, kind in fields.items():
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS "{name}" {SQL_TYPES[kind]}')
