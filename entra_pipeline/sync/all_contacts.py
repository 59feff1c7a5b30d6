"""Stage all_contacts: the merged contact directory, one row per person across every integration,
each field from the first integration in its precedence that has a value. Every integration's sync
ends by merging again, so the directory follows whichever integration changed; the merge reads the
synced contacts of every integration the file names, and writes only the people who joined,
changed or left (with their history). A removal answers to the deletion guard of the integration
whose sync merges it."""

from __future__ import annotations

from entra_pipeline.config import ContactsDirectory, Integration
from entra_pipeline.sync import checks as c
from entra_pipeline.sync.options import SyncOptions
from entra_pipeline.sync.outcome import Json, preview
from entra_pipeline.sync.runner import Prepared
from entra_pipeline.transform.guard import SAMPLE, judge
from entra_pipeline.warehouse import directory_tables as d
from entra_pipeline.warehouse import schema as s

PREVIEW_COLUMNS = ["contact_id", "display_name", "job_title", "integrations"]


def settings(con, directory: ContactsDirectory, keys: list[str]) -> d.MergeSettings:
    """The merge of the integrations ``keys`` (the file's order) under ``directory``'s settings."""
    return d.MergeSettings(keys, {field: directory.order(field, keys) for field in d.contact_fields(con)},
                           directory.excluded_anywhere)


def compute(con, integration: Integration, run_id: str, options: SyncOptions, directory: ContactsDirectory,
            keys: list[str]) -> Prepared:
    s.ensure_schema(con)
    merge = settings(con, directory, keys)
    d.merge(con, merge)
    guard = integration.deletion_guard
    removal = judge(*d.leaving(con, SAMPLE), guard.max_removed, guard.max_removed_percent)
    checks = [c.removal_result(c.DIRECTORY_REMOVALS_WITHIN_LIMIT, "people of the merged directory", removal,
                               options.allow_removals)]
    changes: dict[str, int] = {}

    def write(con) -> dict:
        changes.update(d.write(con, run_id, integration.key, merge))
        sample = con.execute(f'SELECT contact_id, display_name, job_title, integrations FROM "{s.ALL_CONTACTS}" '
                             "ORDER BY contact_id LIMIT 10").fetchall()
        excluded = con.execute(f'SELECT count(DISTINCT contact_id) FROM "{s.ALL_CONTACTS_EXCLUDED}"').fetchone()[0]
        return {"rows": d.count(con), "people_joined": changes["joined"], "people_updated": changes["updated"],
                "people_left": changes["left"], "excluded_elsewhere": excluded,
                "integrations_merged": Json(keys),
                "preview": preview([dict(zip(PREVIEW_COLUMNS, row)) for row in sample], PREVIEW_COLUMNS)}

    return Prepared(checks, write, lambda: {"added": changes.get("joined", 0), "updated": changes.get("updated", 0),
                                            "removed": changes.get("left", 0)})
