"""Bookkeeping between stages: each stage's change log (the directory object ids whose rows it
changed) and how far the next stage has consumed it, the configuration fingerprint its rows were
made with, and which directory fields its rows carry. This is what makes a stage incremental.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.table_rows import insert_rows, utc_now


@dataclass
class StageState:
    """A stage's bookkeeping: how far it consumed the log of the stage before it (None: never,
    it recomputes everything), how far its own log goes, and its configuration fingerprint."""

    consumed_seq: int | None
    produced_seq: int
    fingerprint: str | None


def stage_state(con, integration: str, stage: str) -> StageState | None:
    """A stage's bookkeeping for an integration; None if the stage never wrote."""
    s.ensure_schema(con)
    row = con.execute(f'SELECT consumed_seq, produced_seq, fingerprint FROM "{s.STAGE_STATE}" '
                      "WHERE integration = ? AND stage = ?", [integration, stage]).fetchone()
    return StageState(row[0], row[1] or 0, row[2]) if row else None


def _save_state(con, integration: str, stage: str, run_id: str, state: StageState) -> None:
    con.execute(f'DELETE FROM "{s.STAGE_STATE}" WHERE integration = ? AND stage = ?', [integration, stage])
    con.execute(f'INSERT INTO "{s.STAGE_STATE}" VALUES (?, ?, ?, ?, ?, ?, ?)',
                [integration, stage, state.consumed_seq, state.produced_seq, state.fingerprint, run_id, utc_now()])


def log_changes(con, integration: str, stage: str, run_id: str, object_ids: Iterable[str] | None) -> None:
    """Append what a stage's write changed to its change log (None: everything may have changed)."""
    state = stage_state(con, integration, stage) or StageState(None, 0, None)
    ids = None if object_ids is None else sorted(set(object_ids))
    if ids == []:
        return
    state.produced_seq += 1
    _save_state(con, integration, stage, run_id, state)
    frame = pd.DataFrame({"integration": integration, "stage": stage, "seq": state.produced_seq,
                          "object_id": ids if ids is not None else [None]})
    insert_rows(con, s.STAGE_CHANGES, frame)


def changes_since(con, integration: str, producer: str, consumer: str) -> tuple[set[str] | None, int]:
    """(object ids the producer changed since the consumer last consumed its log, or None when the
    consumer must recompute everything; the producer's latest seq)."""
    produced = stage_state(con, integration, producer)
    consumed = stage_state(con, integration, consumer)
    latest = produced.produced_seq if produced else 0
    if produced is None or consumed is None or consumed.consumed_seq is None:
        return None, latest
    rows = con.execute(f'SELECT DISTINCT object_id FROM "{s.STAGE_CHANGES}" WHERE integration = ? AND stage = ? '
                       "AND seq > ?", [integration, producer, consumed.consumed_seq]).fetchall()
    ids = {r[0] for r in rows}
    return (None if None in ids else ids), latest


def consumed(con, integration: str, consumer: str, producer: str, run_id: str, seq: int,
             fingerprint: str) -> None:
    """The consumer has applied the producer's log up to ``seq`` with this configuration; the
    consumed part of the log is dropped. Each log has exactly one consumer (raw_graph_users ->
    mapped_contacts -> filtered_contacts -> distribution_lists, raw_graph_groups ->
    distribution_lists): a second one would miss what the first dropped."""
    state = stage_state(con, integration, consumer) or StageState(None, 0, None)
    state.consumed_seq, state.fingerprint = seq, fingerprint
    _save_state(con, integration, consumer, run_id, state)
    con.execute(f'DELETE FROM "{s.STAGE_CHANGES}" WHERE integration = ? AND stage = ? AND seq <= ?',
                [integration, producer, seq])


def fingerprint(con, integration: str, stage: str) -> str | None:
    """The configuration fingerprint a stage's current rows were made with, if any."""
    state = stage_state(con, integration, stage)
    return state.fingerprint if state else None


def write_fields_read(con, integration: str, stage: str, run_id: str, fields: Iterable[str]) -> None:
    """Record which directory fields a stage's rows carry (see ``fields_read``)."""
    con.execute(f'DELETE FROM "{s.DIRECTORY_FIELDS_READ}" WHERE integration = ? AND stage = ?', [integration, stage])
    con.execute(f'INSERT INTO "{s.DIRECTORY_FIELDS_READ}" VALUES (?, ?, ?, ?, ?)',
                [integration, stage, sorted(fields), run_id, utc_now()])


def fields_read(con, integration: str, stage: str) -> set[str] | None:
    """The directory fields a stage's current rows carry; None if the stage never ran."""
    s.ensure_schema(con)
    row = con.execute(f'SELECT fields FROM "{s.DIRECTORY_FIELDS_READ}" WHERE integration = ? AND stage = ?',
                      [integration, stage]).fetchone()
    return set(row[0]) if row else None

