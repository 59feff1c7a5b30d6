"""Stage mapped_contacts: every directory user (or Workday worker) with a usable Unique Contact
ID, mapped to contact fields inside DuckDB. Maps the people changed since it last ran (and everyone
sharing a Unique Contact ID with them), or all of them after a full read or a mapping change."""

from __future__ import annotations

from entra_pipeline.config import Integration
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names
from entra_pipeline.sync.incremental import fingerprint, incremental_input
from entra_pipeline.sync.options import SyncOptions
from entra_pipeline.sync.outcome import Json, counts, preview
from entra_pipeline.sync.runner import Prepared, StageFailed, require_fields
from entra_pipeline.transform import mapping
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse import admin, change_log, contact_tables, import_errors

PREVIEW_COLUMNS = ["contact_id", "display_name", "department", "country"]


def compute(con, integration: Integration, run_id: str, options: SyncOptions,
            configured: frozenset[str] | None = None, unreadable: int = 0) -> Prepared:
    """The mapping, its checks and its write. ``configured``: every configured integration key,
    for the orphaned-integrations check (None: not evaluated, as in a preview); ``unreadable``:
    integrations of the file whose key cannot be read (any of them may be the one not named)."""
    # The mapping runs in DuckDB into a temporary table of this connection; the checks read it, and
    # only then (if nothing blocks) is it written.
    plan = mapping.plan_for(integration.mapping)
    unique_id = integration.mapping.unique_id
    custom = {name: f.type for name, f in integration.mapping.custom_fields.items()}
    raw = s.RAW_PEOPLE[integration.kind]
    available = require_fields(con, integration, raw, integration.imported_fields())
    conflicts = s.custom_column_conflicts(con, custom)
    if conflicts:
        raise StageFailed(f"integration {integration.key!r}: {conflicts[0]}; nothing was written")
    made_with = fingerprint(plan, unique_id, sorted(available), custom)
    changed, seq = incremental_input(con, integration, raw, names.MAPPED_CONTACTS, made_with, raw)
    result = contact_tables.map_raw_users(con, integration.key, plan, unique_id, sorted(available), changed,
                                          integration.kind, sample_columns=PREVIEW_COLUMNS)
    candidates = result.candidates
    checks = [c.users_mapped_result(result.users_read, result.contacts),
              c.issues_result(c.CONTACTS_HAVE_UNIQUE_ID, result.issues),
              c.issues_result(c.UNIQUE_CONTACT_IDS_DISTINCT, result.issues),
              c.issues_result(c.CONTACT_VALUES_VALID, result.issues)]
    if configured is not None:
        # About the warehouse, not this integration's source: evaluated with every integration's sync.
        checks.append(c.orphans_result({k: n for k, n in admin.integrations_in_warehouse(con).items()
                                        if k not in configured}, unreadable))

    def write(con) -> dict:
        rows = contact_tables.write_mapped_contacts(con, integration.key, run_id, plan, custom, candidates)
        import_errors.replace_issues(con, integration.key, mapping.STAGE, run_id, result.issues, candidates)
        change_log.log_changes(con, integration.key, names.MAPPED_CONTACTS, run_id, candidates)
        change_log.consumed(con, integration.key, names.MAPPED_CONTACTS, raw, run_id, seq, made_with)
        # The imported column carries what the raw read selected; the contact columns what this
        # mapping fed.
        change_log.write_fields_read(con, integration.key, names.MAPPED_CONTACTS, run_id, available)
        change_log.write_fields_read(con, integration.key, names.MAPPED_CONTACT_FIELDS, run_id,
                                     [p.contact_field for p in plan if p.source])
        return {"rows": rows, "mode": "full" if candidates is None else "incremental",
                "users_mapped": result.users_read if candidates is None else len(candidates),
                "directory_users": result.users_read, "import_errors": len(result.issues),
                "errors_by_code": Json(counts(i.code for i in result.issues)),
                "custom_fields": ", ".join(f"{n} ({t})" for n, t in custom.items()),
                "preview": preview(result.sample, PREVIEW_COLUMNS)}

    return Prepared(checks, write)
