"""How the Graph stages read: the read plan (a delta round of changes, a full delta round, or a
list read), one read against the integration's tenant with its cost, and progress that says
"users: 40,000 of 100,000 (40%)" at each tenth of the way. A delta read may also start ahead of
its stage (see read_ahead)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from entra_pipeline.config import ConfigError, Integration
from entra_pipeline.errors import is_transient
from entra_pipeline.sources.graph.client import DeltaExpired, DeltaRound, GraphClient
from entra_pipeline.sync import read_ahead
from entra_pipeline.sync.options import RawReadOptions
from entra_pipeline.sync.read_ahead import STAGE_OF
from entra_pipeline.sync.runner import ReadFailed, StageFailed, StageRun
from entra_pipeline.transform.fields import GROUP_SELECT, delta_select_for, reads_manager
from entra_pipeline.warehouse import graph_staging, raw_tables, table_rows

OpenGraph = Callable[[Integration], GraphClient]  # a client for the integration's tenant


#: Seconds between progress lines when a read goes on without reaching the next tenth: a line
#: per page would flood the event log (a delta round has hundreds of pages and no total).
PROGRESS_SECONDS = 10.0


def progress(run: StageRun, expected: int | None = None,
             clock: Callable[[], float] = time.monotonic) -> Callable[[str, int, int | None], None]:
    """Reports "users 40,000 / 100,000 (40%)" at each tenth of the way, and otherwise at most every
    PROGRESS_SECONDS. A delta round has no total: ``expected`` (the rows the last sync stored)
    stands in for it, said as "about"."""
    last: dict[str, tuple[int, float]] = {}  # label -> (done, when) at its last line
    started = clock()

    def report(label: str, done: int, total: int | None) -> None:
        estimate = total is None and bool(expected)
        total = total if total is not None else expected or None
        now = clock()
        done_before, said_at = last.get(label, (0, started))
        tenth = max((total or 0) // 10, 1)
        reached = total is not None and done // tenth > done_before // tenth
        if not (reached or now - said_at >= PROGRESS_SECONDS):
            return
        last[label] = (done, now)
        if total is None:
            run.info(f"{label}: {done:,} so far")
        else:
            share = min(done / total, 1.0) if total else 1.0
            run.info(f"{label}: {done:,} of {'about ' if estimate else ''}{total:,} ({share:.0%})")

    return report


def read(integration: Integration, open_graph: OpenGraph, what: str, fetch: Callable[[GraphClient], object]) -> tuple:
    """(``fetch``'s result against the integration's tenant, the read's cost as metadata); any
    failure is one ReadFailed naming the integration."""
    started = time.monotonic()
    try:
        with open_graph(integration) as client:
            result = fetch(client)
    except ConfigError as exc:
        raise StageFailed(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - reported as one line naming the integration
        # Only a passing Graph condition is worth a retry; anything else would fail the same way again.
        raise ReadFailed(f"integration {integration.key!r}: reading {what} failed: {exc}",
                         transient=is_transient(exc)) from None
    metadata = {**{f"graph_{k}": v for k, v in client.stats.as_dict().items()},
                "graph_seconds": round(time.monotonic() - started, 3)}
    return result, metadata


def read_plan(integration: Integration, state: raw_tables.DeltaState | None, select: list[str],
              full_resync: bool) -> tuple[bool, str]:
    """(full round?, why) for a delta read."""
    if full_resync:
        return True, "full resync asked for in the run config (full_resync: true)"
    if state is None:
        return True, "first delta sync of this integration"
    if sorted(state.fields) != sorted(select):
        added = sorted(set(select) - set(state.fields))
        return True, ("the mapping or exclusions now read other directory properties"
                      + (f" ({', '.join(added)})" if added else ""))
    every = integration.source.full_sync_every_days
    age = datetime.now(timezone.utc) - state.full_round_at
    if every is not None and age >= timedelta(days=every):
        return True, (f"periodic full reconciliation: the last full round was {age.days} days ago "
                      f"(full_sync_every_days: {every:g})")
    return False, f"changes since the last sync (last full round {state.full_round_at:%Y-%m-%d %H:%M} UTC)"


@dataclass
class GraphRead:
    """A Graph stage's delta read: where it started (the stored deltaLink state and row count) and
    what it brought: a round of changes in memory, or a full round staged in a scratch file
    (``staged``, removed with ``close``)."""

    state: raw_tables.DeltaState | None
    previous: int
    select: list[str]
    round_: DeltaRound
    reason: str
    meta: dict
    staged: graph_staging.Staged | None = None

    def close(self) -> None:
        if self.staged is not None:
            self.staged.close()


def delta_read(run: StageRun, open_graph: OpenGraph, resource: str, state: raw_tables.DeltaState | None,
               previous: int, options: RawReadOptions) -> GraphRead:
    """One delta round, falling back to a full round when Graph has forgotten the token.
    ``previous``: how many objects are stored (what a full round should bring, for progress)."""
    integration = run.integration
    select = delta_select(integration, resource)
    full, reason = read_plan(integration, state, select, options.full_resync)
    whole, changes = progress(run, previous), progress(run)
    run.info(f"{resource}: {'full round' if full else 'incremental'}: {reason}")

    def full_round(client: GraphClient, why: str) -> tuple[DeltaRound, str, graph_staging.Staged]:
        # Staged page by page into a scratch file: a full round is the whole directory.
        if resource == "users":
            staged = graph_staging.StagedUsers(STAGE_OF[resource], reads_manager(integration.imported_fields()))
        else:
            staged = graph_staging.StagedGroups(STAGE_OF[resource])
        try:
            round_ = client.delta_round(resource, select, None, whole, staged.add)
            staged.finish()
        except BaseException:
            staged.close()
            raise
        return round_, why, staged

    def fetch(client: GraphClient) -> tuple[DeltaRound, str, graph_staging.Staged | None]:
        if full or state is None:
            return full_round(client, reason)
        if not client.serves(state.delta_link):
            # The token must never go to another host: the Graph endpoint changed, read everything.
            if integration.source.demo_tenant is not None:
                # Expected: the demo tenant starts afresh on another port and keeps no delta tokens.
                why = "the demo tenant restarted since the last sync (it keeps no delta tokens); read everything again"
                run.info(f"{resource}: {why}")
            else:
                why = ("the stored deltaLink points to another Graph endpoint (the Graph URL changed); read "
                       "everything again")
                run.warn(f"integration {integration.key!r}: {resource}: {why}")
            return full_round(client, why)
        try:
            return client.delta_round(resource, select, state.delta_link, changes), reason, None
        except DeltaExpired as exc:
            why = f"Graph no longer accepts the stored delta token ({exc}); read everything again"
            run.warn(f"integration {integration.key!r}: {resource}: {why}")
            return full_round(client, why)

    (round_, why, staged), graph_meta = read(integration, open_graph, resource, fetch)
    graph_meta.update({"read_mode": "full" if round_.full else "incremental", "read_reason": why,
                       "delta_token_expired": why != reason, "delta_pages": round_.pages,
                       "delta_items": round_.count})
    return GraphRead(state, previous, select, round_, why, graph_meta, staged)


def delta_select(integration: Integration, resource: str) -> list[str]:
    """What a delta round of ``users`` or ``groups`` selects for the integration."""
    if resource == "users":
        return delta_select_for(integration.imported_fields())
    return [*GROUP_SELECT, "members"]


def read_resource(run: StageRun, open_graph: OpenGraph, resource: str,
                  options: dict[str, RawReadOptions]) -> GraphRead:
    """The stage's delta read of ``users`` or ``groups`` (``options`` per resource): the one read
    ahead by the other Graph stage, or read now; the other one's read is started ahead first, if
    its stage executes after this one in this process (see read_ahead)."""

    def plan(stage: StageRun, what: str) -> tuple[raw_tables.DeltaState | None, int]:
        with stage.warehouse() as con:
            return (raw_tables.delta_state(con, stage.key, what),
                    table_rows.count_rows(con, STAGE_OF[what], stage.key))

    def fetch(stage: StageRun, what: str, planned: tuple[raw_tables.DeltaState | None, int]) -> GraphRead:
        return delta_read(stage, open_graph, what, *planned, options[what])

    other = "groups" if resource == "users" else "users"
    read_ahead.start(run, other, lambda stage: plan(stage, other), lambda stage, p: fetch(stage, other, p))
    return read_ahead.take(run, resource, lambda stage: plan(stage, resource),
                           lambda stage, p: fetch(stage, resource, p))


def stage_values(round_: DeltaRound | None, reason: str, change: raw_tables.RawChange, graph_meta: dict) -> dict:
    """A delta read's sync_run_stages values."""
    return {"read_mode": "full" if round_ is None or round_.full else "incremental", "read_reason": reason,
            "changes_read": round_.count if round_ is not None else None, "added": change.added,
            "updated": change.updated, "removed": change.removed,
            "graph_requests": graph_meta.get("graph_requests"), "graph_bytes": graph_meta.get("graph_bytes")}


def change_metadata(round_: DeltaRound, change: raw_tables.RawChange, what: str) -> dict:
    """A full round's counts are what it corrected against the stored rows (drift, or changes
    since the last sync when the token had expired); an incremental round's are the changes."""
    prefix = "reconciled_" if round_.full else ""
    return {f"{prefix}{what}_added": change.added, f"{prefix}{what}_updated": change.updated,
            f"{prefix}{what}_removed": change.removed}
