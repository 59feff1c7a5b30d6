"""The preview report (sync_preview): what a sync would change, computed by running the stages
inside a transaction that is rolled back, and kept as the integration's latest preview.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.list_tables import memberships, previous_lists
from entra_pipeline.warehouse.table_rows import utc_now


@dataclass
class PreviewState:
    """What the preview compares against: the committed exclusions, lists and memberships."""

    excluded: dict[str, str]
    lists: dict[str, str]
    members: set[tuple[str, str]]


def preview_state(con, integration: str) -> PreviewState:
    """The state a preview starts from (read before the stages run in the rolled-back transaction)."""
    excluded = dict(con.execute(f'SELECT contact_id, rule FROM "{s.EXCLUDED_CONTACTS}" WHERE integration = ?',
                                [integration]).fetchall())
    return PreviewState(excluded, previous_lists(con, integration), memberships(con, integration))


def preview_rows(con, integration: str, run_id: str, before: PreviewState) -> list[tuple]:
    """(change, contact_id, list_id, details) for everything the stages written on ``con`` under
    ``run_id`` changed compared with ``before`` (call inside the transaction, before rolling back)."""
    rows: list[tuple] = []
    # The run's history rows: the integration's contacts, then the merged directory (everyone's).
    for table, kind, where, params in ((s.CONTACT_CHANGES, "contact", "integration = ? AND ", [integration]),
                                       (s.ALL_CONTACT_CHANGES, "directory", "", [])):
        for change, contact_id, details in con.execute(
                f'SELECT change, contact_id, changes FROM "{table}" WHERE {where}run_id = ? ORDER BY contact_id',
                [*params, run_id]).fetchall():
            rows.append((f"{kind}_{change}", contact_id, None, {"fields": json.loads(details)} if details else None))
    after = preview_state(con, integration)
    for contact_id in sorted(after.excluded.keys() - before.excluded.keys()):
        rows.append(("contact_excluded", contact_id, None, {"rule": after.excluded[contact_id]}))
    for contact_id in sorted(before.excluded.keys() - after.excluded.keys()):
        rows.append(("contact_no_longer_excluded", contact_id, None, {"rule": before.excluded[contact_id]}))
    for list_id in sorted(after.lists.keys() - before.lists.keys()):
        rows.append(("list_added", None, list_id, {"display_name": after.lists[list_id]}))
    for list_id in sorted(before.lists.keys() - after.lists.keys()):
        rows.append(("list_removed", None, list_id, {"display_name": before.lists[list_id]}))
    for list_id, contact_id in sorted(after.members - before.members):
        rows.append(("list_member_added", contact_id, list_id, None))
    for list_id, contact_id in sorted(before.members - after.members):
        rows.append(("list_member_removed", contact_id, list_id, None))
    return rows


def write_preview(con, integration: str, run_id: str, rows: list[tuple]) -> int:
    """Replace the integration's preview report."""
    con.execute(f'DELETE FROM "{s.SYNC_PREVIEW}" WHERE integration = ?', [integration])
    now = utc_now()
    if rows:
        con.executemany(f'INSERT INTO "{s.SYNC_PREVIEW}" VALUES (?, ?, ?, ?, ?, ?, ?)',
                        [(integration, run_id, kind, cid, lid, json.dumps(d) if d is not None else None, now)
                         for kind, cid, lid, d in rows])
    return len(rows)
