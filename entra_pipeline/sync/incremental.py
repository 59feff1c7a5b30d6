"""The incremental engine: a stage recomputes only what its producer's change log says changed
since the stage last ran, unless its configuration changed (another fingerprint) or so much
changed that recomputing everything is cheaper."""

from __future__ import annotations

import hashlib

from entra_pipeline.config import Integration
from entra_pipeline.warehouse import change_log, table_rows

#: Above this share of changed rows an incremental stage recomputes everything (cheaper then).
INCREMENTAL_LIMIT = 0.25


def fingerprint(*parts) -> str:
    """What a stage's rows were made with (configuration): another one means recompute all."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def incremental_input(con, integration: Integration, producer: str, consumer: str, fingerprint: str,
                      table: str) -> tuple[set[str] | None, int]:
    """(the producer's object ids changed since the consumer last ran, or None when the consumer
    has to recompute everything; the producer's log position to record as consumed). ``table``
    is what the share of changes is measured against."""
    changed, seq = change_log.changes_since(con, integration.key, producer, consumer)
    if changed is None or change_log.fingerprint(con, integration.key, consumer) != fingerprint:
        return None, seq
    if len(changed) > INCREMENTAL_LIMIT * max(table_rows.count_rows(con, table, integration.key), 1):
        return None, seq
    return changed, seq
