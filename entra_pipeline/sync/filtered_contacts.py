"""Stage filtered_contacts: the synced contacts (table contacts), the mapped contacts that no
exclusion rule removed, and who was excluded by which rule. Appends who joined, changed or left
to contact_changes and, in the same transaction, takes people who are no longer contacts off every
list."""

from __future__ import annotations

from entra_pipeline.config import Integration
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names
from entra_pipeline.sync.incremental import fingerprint, incremental_input
from entra_pipeline.sync.mapped_contacts import PREVIEW_COLUMNS
from entra_pipeline.sync.options import SyncOptions
from entra_pipeline.sync.outcome import Json, preview
from entra_pipeline.sync.runner import Prepared, require_fields
from entra_pipeline.transform import exclusions
from entra_pipeline.transform.guard import SAMPLE, assess, judge
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse import change_log, contact_tables, list_tables, summaries, table_rows


def compute(con, integration: Integration, run_id: str, options: SyncOptions) -> Prepared:
    rules = integration.exclusions.all_rules()
    imported_needed = sorted(set().union(*(r.imported_fields() for r in rules)))
    contact_needed = sorted(set().union(*(r.contact_fields() for r in rules)))
    require_fields(con, integration, names.MAPPED_CONTACTS, set(imported_needed))
    require_fields(con, integration, names.MAPPED_CONTACT_FIELDS, set(contact_needed), names.MAPPED_CONTACTS)
    made_with = fingerprint(integration.exclusions.model_dump_json(), imported_needed, contact_needed)
    only, seq = incremental_input(con, integration, names.MAPPED_CONTACTS, names.FILTERED_CONTACTS, made_with,
                                  names.MAPPED_CONTACTS)
    result = exclusions.apply_exclusions(contact_tables.stream_for_rules(
        con, integration.key, contact_needed, imported_needed, source_ids=only), rules)
    guard = integration.deletion_guard
    if only is None:
        current = contact_tables.contact_ids(con, integration.key)
        total, mapped_total, kept_total = len(current), result.evaluated, len(result.kept)
    else:
        # Only the contacts of changed directory users can change: weigh them against the whole.
        current = contact_tables.contacts_of(con, integration.key, only)
        total = table_rows.count_rows(con, s.CONTACTS, integration.key)
        mapped_total = table_rows.count_rows(con, s.MAPPED_CONTACTS, integration.key)
        kept_total = total - len(current) + len(result.kept)
    removal = assess(current, result.kept, guard.max_removed, guard.max_removed_percent,
                     total)
    # The contacts that leave take their list memberships with them (prune_list_members, below):
    # those removals answer to the same guard as the list stage's own.
    leaving = judge(*list_tables.memberships_leaving(con, integration.key, result.kept, only, SAMPLE),
                    guard.max_removed, guard.max_removed_percent)
    checks = [c.contacts_kept_result(mapped_total, kept_total),
              c.removal_result(c.CONTACT_REMOVALS_WITHIN_LIMIT, "contacts", removal, options.allow_removals),
              c.removal_result(c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT, "list memberships", leaving,
                               options.allow_removals)]
    changes: dict[str, int] = {}

    def write(con) -> dict:
        was_excluded = contact_tables.excluded_ids(con, integration.key, only) if only is not None else set()
        contact_tables.write_contacts_except(con, integration.key, run_id,
                                             (c["contact_id"] for c, _ in result.excluded), only)
        contact_tables.write_exclusions(con, integration.key, run_id, result.excluded, only)
        change_log.log_changes(con, integration.key, names.FILTERED_CONTACTS, run_id, only)
        # The merged directory's input: people whose contact changed, or who were or are now excluded.
        change_log.log_changes(con, integration.key, names.FILTERED_PEOPLE, run_id, None if only is None else (
            contact_tables.changed_people(con, integration.key, run_id)
            | (was_excluded ^ {c["contact_id"] for c, _ in result.excluded})))
        pruned = changes["list_members_removed"] = list_tables.prune_list_members(con, integration.key)
        change_log.consumed(con, integration.key, names.FILTERED_CONTACTS, names.MAPPED_CONTACTS, run_id, seq,
                            made_with)
        sample = table_rows.sample_rows(con, s.CONTACTS, integration.key, PREVIEW_COLUMNS)
        changes.update(contact_tables.change_counts(con, integration.key, run_id))
        excluded = summaries.excluded_by_rule(con, integration.key)
        return {"rows": kept_total, "mode": "full" if only is None else "incremental",
                "contacts_evaluated": result.evaluated, "excluded": sum(excluded.values()),
                "list_members_removed": pruned,
                "contacts_joined": changes.get("joined", 0), "contacts_updated": changes.get("updated", 0),
                "contacts_left": changes.get("left", 0), "preview": preview(sample, PREVIEW_COLUMNS),
                "excluded_by_rule": Json(excluded), "rules": Json([r.name for r in rules])}

    return Prepared(checks, write, lambda: {"added": changes.get("joined", 0), "updated": changes.get("updated", 0),
                                            "removed": changes.get("left", 0),
                                            "list_members_removed": changes.get("list_members_removed", 0)})
