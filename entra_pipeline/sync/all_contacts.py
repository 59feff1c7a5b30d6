"""Stage all_contacts: the merged contact directory, one row per person across every integration,
each field from the first integration in its precedence that has a value. Every integration's sync
ends by merging again the people its sync changed (everyone after a full round or a new
configuration), so the directory follows whichever integration changed; the merge reads those
people's synced contacts in every integration the file names, and writes only the people who
joined, changed or left (with their history). A removal answers to the deletion guard of the integration
whose sync merges it."""

from __future__ import annotations

from entra_pipeline.config import ContactsDirectory, Integration
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names
from entra_pipeline.sync.incremental import INCREMENTAL_LIMIT, fingerprint
from entra_pipeline.sync.options import SyncOptions
from entra_pipeline.sync.outcome import Json, preview
from entra_pipeline.sync.runner import Prepared
from entra_pipeline.transform.guard import SAMPLE, judge
from entra_pipeline.warehouse import change_log, table_rows
from entra_pipeline.warehouse import directory_tables as d
from entra_pipeline.warehouse import schema as s

PREVIEW_COLUMNS = ["contact_id", "display_name", "job_title", "integrations"]


def settings(con, directory: ContactsDirectory, keys: list[str]) -> d.MergeSettings:
    """The merge of the integrations ``keys`` (the file's order) under ``directory``'s settings."""
    return d.MergeSettings(keys, {field: directory.order(field, keys) for field in d.contact_fields(con)},
                           directory.excluded_anywhere)


def people_to_merge(con, integration: Integration, made_with: str) -> tuple[set[str] | None, int]:
    """(the people this integration's contacts or exclusions changed since its last merge, or None
    to merge everyone; the position in filtered_contacts' people log to record as consumed). Every
    integration merges the people it changed; a new configuration merges everyone."""
    changed, seq = change_log.changes_since(con, integration.key, names.FILTERED_PEOPLE, names.ALL_CONTACTS)
    if changed is None or change_log.fingerprint(con, integration.key, names.ALL_CONTACTS) != made_with:
        return None, seq
    if len(changed) > INCREMENTAL_LIMIT * max(d.count(con), 1):
        return None, seq
    return changed, seq


def compute(con, integration: Integration, run_id: str, options: SyncOptions, directory: ContactsDirectory,
            keys: list[str]) -> Prepared:
    s.ensure_schema(con)
    merge = settings(con, directory, keys)
    made_with = fingerprint(directory.model_dump_json(), keys, sorted(merge.orders), d.integrations_present(con))
    only, seq = people_to_merge(con, integration, made_with)
    d.merge(con, merge, only)
    guard = integration.deletion_guard
    removal = judge(*d.leaving(con, SAMPLE, only), guard.max_removed, guard.max_removed_percent)
    # The merged lists (all_contact_list_members) lose the memberships of the people who leave.
    memberships = judge(*d.memberships_leaving(con, SAMPLE, only), guard.max_removed, guard.max_removed_percent)
    checks = [c.removal_result(c.DIRECTORY_REMOVALS_WITHIN_LIMIT, "people of the merged directory", removal,
                               options.allow_removals),
              c.removal_result(c.DIRECTORY_MEMBERSHIPS_WITHIN_LIMIT, "list memberships of the merged directory",
                               memberships, options.allow_removals)]
    changes: dict[str, int] = {}

    def write(con) -> dict:
        changes.update(d.write(con, run_id, integration.key, merge, only))
        change_log.consumed(con, integration.key, names.ALL_CONTACTS, names.FILTERED_PEOPLE, run_id, seq, made_with)
        sample = table_rows.sample_rows(con, s.ALL_CONTACTS, integration.key, PREVIEW_COLUMNS)
        excluded = con.execute(f'SELECT count(DISTINCT contact_id) FROM "{s.ALL_CONTACTS_EXCLUDED}"').fetchone()[0]
        return {"rows": d.count(con), "mode": "full" if only is None else "incremental",
                "people_recomputed": d.merged_count(con) if only is None else len(only),
                "people_joined": changes["joined"], "people_updated": changes["updated"],
                "people_left": changes["left"], "list_memberships_removed": memberships.removed,
                "excluded_elsewhere": excluded,
                "integrations_merged": Json(keys),
                "preview": preview(sample, PREVIEW_COLUMNS)}

    return Prepared(checks, write, lambda: {"added": changes.get("joined", 0), "updated": changes.get("updated", 0),
                                            "removed": changes.get("left", 0),
                                            "list_members_removed": memberships.removed})
