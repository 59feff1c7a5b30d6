"""Directory users -> contacts: the field mapping, types and the Unique Contact ID, as SQL.

Mapping runs inside DuckDB over the raw Graph JSON (vectorised; a 100k-user tenant never becomes
100k Python dicts). This module only builds the query; ``warehouse.contact_tables`` runs it.

Rules, per contact field:
- Text: the directory value as text, trimmed; empty is NULL. A collection (businessPhones,
  otherMails) gives its first non-empty entry; numbers and booleans keep their JSON spelling.
- Number: digits with optional sign, decimal point and exponent, finite; anything else
  ("n/a", "12,5") is an ``invalid_value`` import error and the field stays NULL.
- Date: ISO 8601, a date (2024-03-01, or Workday's 2024-03-01-08:00) or a date-time
  (2019-04-01T08:30:00Z, whose calendar date as written is kept); with a configured ``format`` (strptime codes, e.g. ``%d/%m/%Y``) that
  layout instead. "31/02/2024" or "2024-02-30" are import errors.
- Boolean: JSON true/false or the text "true"/"false".
- The Unique Contact ID: emails trimmed, lower-cased and checked for shape; other fields as text.
  Users without one are import errors, not contacts. Several users with one ID: an enabled member
  account is preferred (a rehire's old disabled account must not hide the new one), then the
  smallest directory object id; every user involved is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import (BOOLEAN, DATE, ENTRA, EXTENSION_ATTRIBUTES, EXTENSION_CONTAINER, NUMBER,
                                             WORKDAY)

STAGE = "mapped_contacts"

MISSING_UNIQUE_ID = "missing_unique_id"
INVALID_UNIQUE_ID = "invalid_unique_id"
DUPLICATE_UNIQUE_ID = "duplicate_unique_id"
INVALID_VALUE = "invalid_value"

EMAIL_PATTERN = r"[^@\s]+@[^@\s]+\.[^@\s]+"  # deliberately loose: mail servers are the final judge
_NUMBER_PATTERN = r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*"
_ISO_PATTERN = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}.*)?"
_ZONED_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}(Z|[+-]\d{2}:\d{2})"

DUPLICATES_LISTED = 5  # ids named in each duplicate's message: a bad unique_id must not grow them n²

REASONS = {
    NUMBER: "not a number (digits with an optional sign, '.' decimal point and exponent)",
    DATE: "not a valid ISO 8601 date (YYYY-MM-DD, with or without a zone such as -08:00, or a date-time); set a "
          "format for other layouts",
    BOOLEAN: "takes true or false",
}


@dataclass(frozen=True)
class FieldPlan:
    """How one contact field is filled: from which imported field, as which type."""

    contact_field: str
    source: str | None
    field_type: str
    fmt: str | None = None

    def reason(self) -> str:
        if self.field_type == DATE and self.fmt:
            return f"not a valid date in the format {self.fmt!r}"
        return REASONS[self.field_type]


def plan_for(mapping) -> list[FieldPlan]:
    """The field plan of a ``config.Mapping``: every contact field, in column order."""
    types = mapping.field_types()
    formats = {name: f.format for name, f in mapping.custom_fields.items()}
    return [FieldPlan(name, source, types[name], formats.get(name)) for name, source in mapping.resolved().items()]


def json_path(imported_field: str, kind: str = ENTRA) -> str:
    """Where an imported field sits in the raw JSON (names are validated identifiers). A Workday
    column is always a plain key, whatever Graph would mean by the same name."""
    if kind == WORKDAY:
        return f'$."{imported_field}"'
    if imported_field in EXTENSION_ATTRIBUTES:
        return f"$.{EXTENSION_CONTAINER}.{imported_field}"
    if imported_field == "managerId":
        return "$.manager.id"
    if imported_field == "managerMail":
        return "$.manager.mail"
    return f'$."{imported_field}"'


def strip(sql: str) -> str:
    """SQL trimming all leading and trailing white space (DuckDB's trim() removes spaces only)."""
    return f"regexp_replace({sql}, '^\\s+|\\s+$', '', 'g')"


# Graph collections: a contact field takes their first non-empty entry.
ARRAY_FIELDS = frozenset({"businessPhones", "otherMails", "proxyAddresses"})


def _typed(plan: FieldPlan, text: str, params: list) -> str:
    if plan.field_type == NUMBER:
        return (f"CASE WHEN regexp_full_match({text}, '{_NUMBER_PATTERN}') "
                f"AND isfinite(TRY_CAST({text} AS DOUBLE)) THEN TRY_CAST({text} AS DOUBLE) END")
    if plan.field_type == DATE:
        if plan.fmt:
            params.append(plan.fmt)
            return f"CAST(try_strptime({text}, ?) AS DATE)"
        # Validated as a timestamp, kept as the calendar date as written (no shift to UTC). A
        # date with a zone (Workday's 2024-03-01-08:00) is that calendar date.
        return (f"CASE WHEN regexp_full_match({text}, '{_ZONED_DATE_PATTERN}') THEN TRY_CAST(left({text}, 10) AS DATE) "
                f"WHEN regexp_full_match({text}, '{_ISO_PATTERN}') "
                f"AND TRY_CAST({text} AS TIMESTAMPTZ) IS NOT NULL THEN TRY_CAST(left({text}, 10) AS DATE) END")
    if plan.field_type == BOOLEAN:
        return f"CASE WHEN lower({text}) IN ('true', 'false') THEN lower({text}) = 'true' END"
    return text


def _id_text(plan: FieldPlan, column: str, text: str) -> str:
    if plan.contact_field == "email":
        return f"CASE WHEN regexp_full_match({column}, '{EMAIL_PATTERN}') THEN {column} END"
    if plan.field_type == NUMBER:
        # Whole numbers from their text (exact beyond 2^53); others as the stored number.
        return (f"CASE WHEN {column} IS NULL THEN NULL WHEN regexp_full_match({text}, '[+-]?\\d{{1,38}}') "
                f"THEN CAST(CAST({text} AS HUGEINT) AS VARCHAR) ELSE CAST({column} AS VARCHAR) END")
    if plan.field_type == DATE:
        return f"strftime({column}, '%Y-%m-%d')"
    return f"CAST({column} AS VARCHAR)"


# Per source type: where the person's name for messages is, and what ranks duplicates of one
# Unique Contact ID (JSON path and the SQL over its text _s[k]). Entra ID keeps an enabled member
# account first; Workday an Active worker first (a rehire's old record must not hide the new one).
RANKING = {
    ENTRA: ("$.userPrincipalName", "$.accountEnabled", "coalesce(_s[2] = 'false', false)",
            "$.userType", "coalesce(_s[3] = 'Guest', false)"),
    WORKDAY: ("$.__none__", "$.Worker_Status", "coalesce(_s[2] <> 'Active', false)", "$.__none__", "false"),
}


def mapping_query(plan: list[FieldPlan], unique_id: str, imported_fields: list[str], integration: str,
                  raw_table: str = "raw_graph_users", kind: str = ENTRA) -> tuple[str, list[Any]]:
    """A SELECT over one integration's raw users, and its parameters.

    Columns: ``_source_id``, ``_upn``, ``contact_id`` (NULL when unusable), ``_dup_rank`` /
    ``_dup_count`` (users sharing the ID), every contact field, ``imported`` (JSON of
    ``imported_fields``), and for each mapped field ``_t{i}``, the value as read in text.
    Each user's JSON is parsed once: all scalar paths are read in one list extraction.
    """
    mapped = [(i, p) for i, p in enumerate(plan) if p.source is not None]
    # Positions 1-3: who the user is, and what ranks duplicates (see RANKING).
    who, inactive_path, inactive, guest_path, guest = RANKING[kind]
    scalar = [who, inactive_path, guest_path]
    arrays_of = ARRAY_FIELDS if kind == ENTRA else frozenset()
    scalar += [json_path(p.source, kind) for _, p in mapped if p.source not in arrays_of]
    arrays = [json_path(p.source, kind) for _, p in mapped if p.source in arrays_of]
    texts, position, array_position = [], 4, 1
    for i, field_plan in mapped:
        if field_plan.source in arrays_of:
            value = (f"list_filter(from_json(_a[{array_position}], '[\"VARCHAR\"]'), "
                     f"lambda x: coalesce({strip('x')}, '') <> '')[1]")
            array_position += 1
        else:
            value = f"_s[{position}]"
            position += 1
        texts.append(f'nullif({strip(value)}, \'\') AS "_t{i}"')
    params: list[Any] = []
    typed = []
    for i, field_plan in enumerate(plan):
        if field_plan.source is None:
            typed.append(f'NULL AS "{field_plan.contact_field}"')
            continue
        expression = _typed(field_plan, f'"_t{i}"', params)
        if field_plan.contact_field == "email":
            expression = f"lower({expression})"
        typed.append(f'{expression} AS "{field_plan.contact_field}"')
    id_plan = next(p for p in plan if p.contact_field == unique_id)
    # Key names as parameters: they come from the configuration, never pasted into SQL.
    pairs = ", ".join(f"?::VARCHAR, _j[{k}]" for k in range(1, len(imported_fields) + 1))
    raw_columns = ", ".join(f'"_t{i}"' for i, _ in mapped)
    array_read = ", json_extract(data, ?::VARCHAR[]) AS _a" if arrays else ""
    sql = f"""
WITH parsed AS (
    SELECT id AS _source_id, json_extract_string(data, ?::VARCHAR[]) AS _s{array_read},
           json_extract(data, ?::VARCHAR[]) AS _j
    FROM "{raw_table}" WHERE integration = ?
), texts AS (
    SELECT _source_id, _s[1] AS _upn, {inactive} AS _disabled, {guest} AS _guest, _j, {", ".join(texts)}
    FROM parsed
), typed AS (
    SELECT _source_id, _upn, _disabled, _guest, {raw_columns}, {", ".join(typed)},
           json_object({pairs or "'id', _source_id"}) AS imported
    FROM texts
), ided AS (
    SELECT *, {_id_text(id_plan, f'"{unique_id}"', f'"_t{plan.index(id_plan)}"')} AS contact_id FROM typed
)
SELECT *,
       row_number() OVER (PARTITION BY contact_id ORDER BY _disabled, _guest, _source_id) AS _dup_rank,
       count(*) OVER (PARTITION BY contact_id) AS _dup_count
FROM ided"""
    head = [scalar, *([arrays] if arrays else []), [json_path(n, kind) for n in imported_fields], integration]
    # In the order the ? appear: parsed (head), the typed fields' formats, then the key names.
    return sql, [*head, *params, *imported_fields]


def problems_query(plan: list[FieldPlan], unique_id: str, table: str) -> str:
    """Rows of a mapped table (from ``mapping_query``) that carry an import issue."""
    id_index = next(i for i, p in enumerate(plan) if p.contact_field == unique_id)
    checked = [(i, p) for i, p in enumerate(plan) if p.source is not None and p.field_type in REASONS]
    flags = ", ".join(f'("{p.contact_field}" IS NULL AND "_t{i}" IS NOT NULL) AS "_bad{i}"' for i, p in checked)
    any_bad = " OR ".join(f'("{p.contact_field}" IS NULL AND "_t{i}" IS NOT NULL)' for i, p in checked) or "false"
    return f"""
WITH duplicates AS (
    SELECT contact_id, list(_source_id ORDER BY _disabled, _guest, _source_id)[1:{DUPLICATES_LISTED}] AS _dup_ids
    FROM "{table}" WHERE contact_id IS NOT NULL GROUP BY contact_id HAVING count(*) > 1
)
SELECT _source_id, _upn, w.contact_id, _dup_rank, _dup_count, d._dup_ids, "_t{id_index}" AS _id_text
       {", " + flags if flags else ""}
       {"".join(f', "_t{i}"' for i, _ in checked)}
FROM "{table}" w LEFT JOIN duplicates d ON d.contact_id = w.contact_id
WHERE w.contact_id IS NULL OR _dup_count > 1 OR {any_bad}
ORDER BY _source_id"""


# How duplicates of one Unique Contact ID are ranked, per source type (see RANKING).
KEPT_FIRST = {ENTRA: "enabled members first, then the smallest object id",
              WORKDAY: "Active workers first, then the smallest worker id"}


def issues_from_rows(plan: list[FieldPlan], unique_id: str, rows: list[tuple], kind: str = ENTRA) -> list[ImportIssue]:
    """Import issues from ``problems_query`` rows."""
    checked = [(i, p) for i, p in enumerate(plan) if p.source is not None and p.field_type in REASONS]
    issues: list[ImportIssue] = []
    for row in rows:
        source_id, upn, contact_id, rank, count, dup_ids, id_text = row[:7]
        flags, raws = row[7:7 + len(checked)], row[7 + len(checked):]
        who = upn or source_id
        if contact_id is None:
            code = MISSING_UNIQUE_ID if id_text is None else INVALID_UNIQUE_ID
            reason = "is empty" if id_text is None else f"is not a valid {'email address' if unique_id == 'email' else 'value'}: {id_text!r}"
            issues.append(ImportIssue(STAGE, source_id, unique_id, code,
                                      f"user {who}: Unique Contact ID field {unique_id!r} {reason}; not imported"))
            continue
        if count > 1:
            more = f" and {count - len(dup_ids)} more" if count > len(dup_ids) else ""
            issues.append(ImportIssue(
                STAGE, source_id, unique_id, DUPLICATE_UNIQUE_ID,
                f"{count} users share Unique Contact ID {contact_id!r} ({', '.join(dup_ids)}{more}); "
                f"kept {dup_ids[0]} ({KEPT_FIRST[kind]})"))
        for (i, field_plan), bad, raw in zip(checked, flags, raws):
            if bad:
                issues.append(ImportIssue(
                    STAGE, source_id, field_plan.contact_field, INVALID_VALUE,
                    f"contact {contact_id}: {field_plan.contact_field} ({field_plan.field_type}) cannot take "
                    f"{raw!r} from {field_plan.source}: {field_plan.reason()}; left empty"))
    return issues
