"""Stage sync_preview: what a sync would change from the raw tables as they are (contacts joining,
changing or leaving, exclusions, lists and memberships coming or going, and which blocking check
would stop it), computed inside a transaction that is rolled back, so the contact and list tables
stay byte-identical. The report replaces this integration's rows of sync_preview."""

from __future__ import annotations

import json
from functools import partial

from entra_pipeline.config import ContactsDirectory
from entra_pipeline.sync import all_contacts, distribution_lists, filtered_contacts, mapped_contacts
from entra_pipeline.sync import checks as c
from entra_pipeline.sync.options import SyncOptions
from entra_pipeline.sync.outcome import Json, StageOutcome, counts, preview
from entra_pipeline.sync.runner import StageRun
from entra_pipeline.warehouse import connection, preview_report

SAMPLE = 25


def materialize(run: StageRun, directory: ContactsDirectory, merged_keys: list[str]) -> StageOutcome:
    """``directory`` and ``merged_keys``: how the merged directory is merged (the preview shows what
    a sync would change there too)."""
    key = run.key
    with run.warehouse() as con:
        with connection.rolled_back(con):  # the preview never changes the synced tables
            before = preview_report.preview_state(con, key)
            would_block: list[c.CheckOutcome] = []
            merge = partial(all_contacts.compute, directory=directory, keys=merged_keys)
            for compute in (mapped_contacts.compute, filtered_contacts.compute, distribution_lists.compute, merge):
                prepared = compute(con, run.integration, run.run_id, SyncOptions())
                would_block += c.failed_blocking(prepared.checks)
                prepared.write(con)
            rows = preview_report.preview_rows(con, key, run.run_id, before)
        rows += [("check_would_block", None, None, {"check": r.check_name, "description": r.description})
                 for r in would_block]
        with connection.transaction(con):
            preview_report.write_preview(con, key, run.run_id, rows)
            run.record(con)  # the run shows in sync_runs as a preview, not as a sync
            run.describe(con)
    by_kind = counts(kind for kind, *_ in rows)
    run.info(f"preview of {key!r}: " + (", ".join(f"{n:,} {k}" for k, n in by_kind.items()) or "no changes"))
    table = [{"change": k, "contact_id": cid, "list_id": lid, "details": json.dumps(d)[:80] if d else ""}
             for k, cid, lid, d in rows[:SAMPLE]]
    return run.done([], {"changes": len(rows), "changes_by_kind": Json(by_kind),
                         "would_block": ", ".join(r.check_name for r in would_block) or "nothing",
                         "report": preview(table, ["change", "contact_id", "list_id", "details"], SAMPLE)})
