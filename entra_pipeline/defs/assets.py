"""The sync, left to right: raw Graph users and groups -> mapped contacts -> filtered contacts ->
distribution lists. One partition per integration; each asset brings its own integration's rows up
to date in one transaction (all of them, or only what the change log says changed), so a failed or
blocked asset leaves its previous rows intact, the assets after it do not run, and no asset
touches another integration.
"""

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg
from tabulate import tabulate

from entra_pipeline.errors import is_transient
from entra_pipeline.config import SKIP, ConfigError, Integration, RunSettings
from entra_pipeline.config.credentials import certificate
from entra_pipeline.defs import checks as c
from entra_pipeline.defs.resources import (WAREHOUSE_POOL, GraphResource, IntegrationsResource, WarehouseResource,
                                           WorkdayResource)
from entra_pipeline.sources.graph import delta
from entra_pipeline.sources.graph.client import Collection, DeltaExpired, DeltaRound, GraphClient, GraphError, member_type
from entra_pipeline.transform import exclusions, lists, mapping, values
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.process import peak_rss_mb
from entra_pipeline.transform.fields import (ENTRA, MANAGER_FIELDS, WORKDAY, delta_select_for, graph_select_for,
                                             imported_fields_for, manager_expand_for)
from entra_pipeline.transform.guard import assess
from entra_pipeline.sources.workday.client import WorkdayError
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse import (admin, change_log, contact_tables, import_errors, list_tables, preview_report,
                                      raw_tables, raw_workers, run_log, table_rows)
from entra_pipeline.warehouse.connection import rolled_back, transaction

GROUP_NAME = "entra_sync"
PREVIEW_GROUP = "entra_preview"
PREVIEW_ASSET = "sync_preview"
FILTERED_STAGE = "filtered_contacts"
# distribution_lists consumes two change logs: the raw groups' and the contacts'.
LISTS_FROM_GROUPS = "distribution_lists:groups"
LISTS_FROM_CONTACTS = "distribution_lists:contacts"
PREVIEW_SAMPLE = 25
PREVIEW_COLUMNS = ["contact_id", "display_name", "department", "country"]
# directory_fields_read stage name for the contact fields a mapping filled
MAPPED_CONTACT_FIELDS = "mapped_contacts.contact_fields"
RAW_GROUPS_STAGE = "raw_graph_groups"
GROUP_VANISHED = "group_vanished"
GROUP_SELECT = ["id", "displayName", "description", "mail", "mailNickname", "mailEnabled",
                "securityEnabled", "groupTypes"]


class SyncRunConfig(dg.Config):
    """Run config of the contact and list writers. ``allow_removals`` approves, for this run only,
    removing more contacts or list memberships than the integration's deletion guard allows."""

    allow_removals: bool = False


def _progress(context: dg.AssetExecutionContext) -> Callable[[str, int, int | None], None]:
    """Logs "users 4,000 / 12,345" about every tenth of the way, not on every page."""
    last: dict[str, int] = {}

    def report(label: str, done: int, total: int | None) -> None:
        step = max((total or 0) // 10, 1)
        if total is None or done >= total or done - last.get(label, 0) >= step:
            last[label] = done
            context.log.info(f"{label} {done:,} / {total:,}" if total is not None else f"{label} {done:,}")

    return report


def _preview(rows: list[dict], columns: list[str], limit: int = 10) -> dg.MetadataValue:
    table = [[r.get(col) for col in columns] for r in rows[:limit]]
    return dg.MetadataValue.md(tabulate(table, headers=columns, tablefmt="github") if table else "_no rows_")


def _counts(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def _read(integration: Integration, graph: GraphResource, what: str,
          fetch: Callable[[GraphClient], object]) -> tuple:
    """Run ``fetch`` against the integration's tenant; any failure is one clear Failure."""
    started = time.monotonic()
    try:
        with graph.client(integration) as client:
            result = fetch(client)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except Exception as exc:  # noqa: BLE001 - reported as one line naming the integration
        # Only a passing Graph condition is worth the step's RetryPolicy; anything else would
        # fail the same way again.
        raise dg.Failure(description=f"integration {integration.key!r}: reading {what} failed: {exc}",
                         allow_retries=is_transient(exc)) from None
    metadata = {**{f"graph_{k}": v for k, v in client.stats.as_dict().items()},
                "graph_seconds": round(time.monotonic() - started, 3)}
    return result, metadata


def _certificate_check(integration: Integration) -> dg.AssetCheckResult:
    info = None
    if integration.source.auth == "certificate":
        try:
            info = certificate(integration)[1]
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
    return c.certificate_result(integration.source.auth, info, datetime.now(timezone.utc))


def _not_theirs(integration: Integration, source: str, checks: list[str],
                extra: list[dg.AssetCheckResult] = ()) -> dg.MaterializeResult:
    """An asset of the other source type in this integration's run: nothing read or written."""
    return dg.MaterializeResult(
        metadata={"source_type": integration.kind,
                  "skipped": f"integration {integration.key!r} reads {integration.kind}, not {source}: "
                             "nothing read or written"},
        check_results=[*(c.not_applicable(name, integration.kind) for name in checks), *extra])


def _read_workday(context: dg.AssetExecutionContext, integration: Integration, workday: WorkdayResource,
                  warehouse: WarehouseResource) -> Iterator:
    """The whole report, staged while it streams, then applied in one transaction."""
    stage = _Stage(context, integration)
    source = integration.source
    with warehouse.get_connection() as con:
        previous = table_rows.count_rows(con, s.RAW_WORKDAY_WORKERS, integration.key)
    with tempfile.TemporaryDirectory(prefix="workday-") as scratch:
        staged = str(Path(scratch) / "report.duckdb")
        # Only the columns the configuration uses are kept (a report may carry more, even
        # sensitive ones); the others are only counted, for report_columns_decided.
        named = integration.imported_fields()
        try:
            with workday.client(integration) as client:
                raw_workers.stage_workers(staged, _counted(context, client.entries(), "workers"), source.id_field,
                                          named)
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except WorkdayError as exc:
            raise dg.Failure(description=f"integration {integration.key!r}: reading the Workday report failed: {exc}",
                             allow_retries=exc.transient) from None
        stats = client.stats
        # The process's peak so far: what reading the report cost, before any of the stages after it.
        metadata = {"workday_requests": stats.requests, "workday_token_requests": stats.token_requests,
                    "workday_bytes": stats.bytes, "workday_seconds": stats.seconds, "report_entries": stats.entries,
                    "peak_rss_mb_after_read": peak_rss_mb()}
        columns = dict(sorted(stats.columns.items()))
        tested = integration.tested_fields()
        # Missing columns are worth a warning when someone named them; a default the report lacks is not.
        explicit = {name for name, target in integration.mapping.fields.items() if target != SKIP} | tested
        checks = [c.report_columns_result(columns, named | set(integration.mapping.fields), explicit),
                  c.rule_columns_result(columns, tested)]
        try:
            with warehouse.get_connection() as con, raw_workers.staged(con, staged), transaction(con):
                change, issues = raw_workers.apply_raw_workers(con, integration.key, context.run.run_id,
                                                               source.id_field)
                checks = [c.workers_not_emptied_result(change.total, previous),
                          c.issues_result(c.WORKERS_IDENTIFIED, issues), *checks]
                if c.failed_blocking(checks):
                    raise _Blocked
                raw_tables.drop_other_source(con, integration.key, WORKDAY)
                import_errors.replace_issues(con, integration.key, s.RAW_WORKDAY_WORKERS, context.run.run_id, issues)
                change_log.log_changes(con, integration.key, s.RAW_WORKDAY_WORKERS, context.run.run_id,
                                       change.changed_ids)
                # Every configured column counts as read: a report without it has it empty for everyone.
                change_log.write_fields_read(con, integration.key, s.RAW_WORKDAY_WORKERS, context.run.run_id, named)
                stage.record(con, read_mode="full", read_reason="a Workday report is read whole",
                             changes_read=stats.entries, added=change.added, updated=change.updated,
                             removed=change.removed, graph_requests=stats.requests, graph_bytes=stats.bytes)
                sample = table_rows.sample_rows(con, s.RAW_WORKDAY_WORKERS, integration.key, ["id"])
        except _Blocked:
            yield from stage.blocked(checks)
    yield stage.done(checks, {"rows": change.total, "workers_added": change.added, "workers_updated": change.updated,
                              "workers_removed": change.removed, "import_errors": len(issues), **metadata,
                              "preview": _preview(sample, ["id"])})


def _counted(context: dg.AssetExecutionContext, items: Iterator, what: str, every: int = 20_000) -> Iterator:
    """Pass ``items`` through, logging how many so far (a large report takes minutes; no total
    is known before its end)."""
    count = 0
    for count, item in enumerate(items, start=1):
        if count % every == 0:
            context.log.info(f"{what} {count:,}")
        yield item
    context.log.info(f"{what} {count:,} (all)")


def _require_fields(con, integration: Integration, stage: str, needed: set[str],
                    asset: str | None = None) -> set[str]:
    """The fields ``stage``'s rows carry; Failure if the configuration needs others (the mapping or
    exclusions changed since that stage last ran)."""
    asset = asset or stage
    available = change_log.fields_read(con, integration.key, stage)
    if available is None:
        raise dg.Failure(description=f"integration {integration.key!r}: {asset} has no rows yet; "
                                     f"materialize {asset} first", allow_retries=False)
    missing = sorted(needed - available)
    if missing:
        what = "contact fields" if stage == MAPPED_CONTACT_FIELDS else "directory fields"
        raise dg.Failure(
            description=f"integration {integration.key!r}: the mapping and exclusions use {what} "
                        f"that the last {asset} did not {'fill' if stage == MAPPED_CONTACT_FIELDS else 'read'} "
                        f"({', '.join(missing)}); materialize "
                        f"{'raw_graph_users and ' if stage == s.MAPPED_CONTACTS else ''}{asset} again",
            allow_retries=False)
    return available


class _Blocked(Exception):
    """A blocking check failed inside a write transaction: roll it back."""


class _Stage:
    """Timing and the sync_run_stages row of one asset execution."""

    def __init__(self, context: dg.AssetExecutionContext, integration: Integration) -> None:
        self.context, self.integration = context, integration
        self.started = time.monotonic()
        self.started_at = datetime.now(timezone.utc)
        self.name = context.assets_def.key.path[-1]

    def record(self, con, **values) -> None:
        run_log.record_stage(con, self.integration.key, self.context.run.run_id, self.name, self.started_at,
                             **values)

    def blocked(self, results: list[dg.AssetCheckResult]) -> Iterator:
        """Report the checks and fail the step; nothing is written."""
        blocked = c.failed_blocking(results)
        reasons = "; ".join(r.description or r.check_name for r in blocked)
        yield from results
        raise dg.Failure(description=f"integration {self.integration.key!r}: {reasons}; nothing was written",
                         allow_retries=False)

    def done(self, results: list[dg.AssetCheckResult], metadata: dict) -> dg.MaterializeResult:
        metadata["seconds"] = round(time.monotonic() - self.started, 3)
        # The process's peak so far: steps run one after another, so a rise shows which step needs it.
        metadata["process_peak_rss_mb"] = peak_rss_mb()
        return dg.MaterializeResult(metadata=metadata, check_results=results)


def _checked_write(stage: _Stage, results: list[dg.AssetCheckResult], write: Callable[[], dict]) -> Iterator:
    """Write only if no blocking check failed; otherwise report the checks and fail the step."""
    if c.failed_blocking(results):
        yield from stage.blocked(results)
    write_started = time.monotonic()
    metadata = write()
    metadata["write_seconds"] = round(time.monotonic() - write_started, 3)
    yield stage.done(results, metadata)


def _list_users(context: dg.AssetExecutionContext, stage: _Stage, integration: Integration,
                graph: GraphResource, warehouse: WarehouseResource, fields: set[str],
                context_checks: list[dg.AssetCheckResult]) -> Iterator:
    """read: list — every user through /users (with $count), replacing the integration's rows."""
    select, expand = graph_select_for(fields), manager_expand_for(fields)
    progress = _progress(context)
    users, graph_meta = _read(integration, graph, "users",
                              lambda client: client.list_users(select, expand, progress))
    # Before anything reaches DuckDB: a value beyond its limit is an import error, not a failed stage.
    checked = values.check_users(users.items, s.RAW_GRAPH_USERS, track=False)

    def write() -> dict:
        with warehouse.get_connection() as con, transaction(con):
            rows = raw_tables.write_raw_users(con, integration.key, context.run.run_id, checked.items)
            import_errors.replace_value_issues(con, integration.key, s.RAW_GRAPH_USERS, context.run.run_id,
                                               checked.issues, None)
            raw_tables.drop_other_source(con, integration.key, ENTRA)
            change_log.log_changes(con, integration.key, s.RAW_GRAPH_USERS, context.run.run_id, None)
            change_log.write_fields_read(con, integration.key, s.RAW_GRAPH_USERS, context.run.run_id,
                                         imported_fields_for(fields))
            # A later switch back to delta starts with a full round, not from a stale token.
            raw_tables.write_delta_state(con, integration.key, "users", context.run.run_id, None, [], None)
            stage.record(con, read_mode="full", read_reason="read: list", changes_read=None,
                         graph_requests=graph_meta["graph_requests"], graph_bytes=graph_meta["graph_bytes"])
        return {"rows": rows, "graph_reported_count": users.reported_count, "pages": users.pages,
                "selected_properties": ", ".join(select), "expand": expand or "", **graph_meta,
                "import_errors": len(checked.issues),
                "preview": _preview(checked.items, ["id", "userPrincipalName", "displayName", "mail"])}

    with warehouse.get_connection() as con:
        previous = table_rows.count_rows(con, s.RAW_GRAPH_USERS, integration.key)
    checks = [c.users_complete_result(users, integration.source.page_size),
              c.directory_not_empty_result(len(users.items), previous), *context_checks,
              c.issues_result(c.DIRECTORY_VALUES_FIT, checked.issues)]
    yield from _checked_write(stage, checks, write)


def _list_groups(context: dg.AssetExecutionContext, stage: _Stage, integration: Integration,
                 graph: GraphResource, warehouse: WarehouseResource) -> Iterator:
    """read: list — every group through /groups and its members through $batch."""
    progress = _progress(context)

    def fetch(client: GraphClient) -> tuple[Collection, dict]:
        groups = client.list_groups(GROUP_SELECT, progress)
        return groups, client.group_members([g["id"] for g in groups.items], progress)

    (groups, members), graph_meta = _read(integration, graph, "groups", fetch)
    # A group deleted between listing groups and reading its members is left out, and said.
    vanished = [g for g in groups.items if members[g["id"]] is None]
    issues = [ImportIssue(RAW_GROUPS_STAGE, g["id"], None, GROUP_VANISHED,
                          f"group {g.get('displayName')!r} was deleted while the sync read it; left out")
              for g in vanished]
    checked = values.check_groups([g for g in groups.items if members[g["id"]] is not None], RAW_GROUPS_STAGE,
                                  track=False)
    issues += checked.issues
    kept = checked.items
    read = {g["id"]: members[g["id"]] for g in kept}
    usable: dict[str, list[dict]] = {}
    for gid, collection in read.items():
        usable[gid], bad_members = values.check_members(gid, collection.items, RAW_GROUPS_STAGE)
        issues += bad_members
    try:
        edges = {gid: [(member_type(m), m["id"]) for m in items] for gid, items in usable.items()}
    except GraphError as exc:
        raise dg.Failure(description=f"integration {integration.key!r}: reading group members failed: {exc}",
                         allow_retries=False) from None
    kinds = {g["id"]: lists.group_kind(g) for g in kept}

    def write() -> dict:
        with warehouse.get_connection() as con, transaction(con):
            n_groups, n_members = raw_tables.write_raw_groups(con, integration.key, context.run.run_id,
                                                              kept, kinds, edges)
            import_errors.replace_issues(con, integration.key, RAW_GROUPS_STAGE, context.run.run_id, issues)
            change_log.log_changes(con, integration.key, s.RAW_GRAPH_GROUPS, context.run.run_id, None)
            raw_tables.write_delta_state(con, integration.key, "groups", context.run.run_id, None, [], None)
            stage.record(con, read_mode="full", read_reason="read: list", changes_read=None,
                         graph_requests=graph_meta["graph_requests"], graph_bytes=graph_meta["graph_bytes"])
        return {"groups": n_groups, "memberships": n_members, "graph_reported_count": groups.reported_count,
                "groups_vanished": len(vanished), "import_errors": len(issues),
                "groups_by_kind": dg.MetadataValue.json(_counts(kinds.values())), **graph_meta,
                "preview": _preview(kept, ["id", "displayName", "mail", "groupTypes"])}

    check = c.groups_complete_result(groups, read, integration.source.page_size)
    yield from _checked_write(stage, [check], write)


class RawReadConfig(dg.Config):
    """Run config of the raw assets. ``full_resync`` reads everything this run (a full delta round)
    instead of the changes since the last sync, and reports what the full read corrected."""

    full_resync: bool = False


def _read_plan(integration: Integration, state: raw_tables.DeltaState | None, select: list[str],
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


def _delta_read(context: dg.AssetExecutionContext, integration: Integration, graph: GraphResource,
                resource: str, select: list[str], state: raw_tables.DeltaState | None,
                config: RawReadConfig) -> tuple[DeltaRound, str, dict]:
    """One delta round, falling back to a full round when Graph has forgotten the token."""
    full, reason = _read_plan(integration, state, select, config.full_resync)
    progress = _progress(context)
    context.log.info(f"{resource}: {'full round' if full else 'incremental'}: {reason}")

    def fetch(client: GraphClient) -> tuple[DeltaRound, str]:
        if full or state is None:
            return client.delta_round(resource, select, None, progress), reason
        if not client.serves(state.delta_link):
            # The token must never go to another host: the Graph endpoint changed, read everything.
            why = ("the stored deltaLink points to another Graph endpoint (the Graph URL changed, or the demo "
                   "tenant restarted); read everything again")
            context.log.warning(f"integration {integration.key!r}: {resource}: {why}")
            return client.delta_round(resource, select, None, progress), why
        try:
            return client.delta_round(resource, select, state.delta_link, progress), reason
        except DeltaExpired as exc:
            why = f"Graph no longer accepts the stored delta token ({exc}); read everything again"
            context.log.warning(f"integration {integration.key!r}: {resource}: {why}")
            return client.delta_round(resource, select, None, progress), why

    (round_, why), graph_meta = _read(integration, graph, resource, fetch)
    graph_meta.update({"read_mode": "full" if round_.full else "incremental", "read_reason": why,
                       "delta_token_expired": why != reason, "delta_pages": round_.pages,
                       "delta_items": len(round_.items)})
    return round_, why, graph_meta


def _stage_values(round_: DeltaRound | None, reason: str, change: raw_tables.RawChange, graph_meta: dict) -> dict:
    return {"read_mode": "full" if round_ is None or round_.full else "incremental", "read_reason": reason,
            "changes_read": len(round_.items) if round_ is not None else None, "added": change.added,
            "updated": change.updated, "removed": change.removed,
            "graph_requests": graph_meta.get("graph_requests"), "graph_bytes": graph_meta.get("graph_bytes")}


def _change_metadata(round_: DeltaRound, change: raw_tables.RawChange, what: str) -> dict:
    """A full round's counts are what it corrected against the stored rows (drift, or changes
    since the last sync when the token had expired); an incremental round's are the changes."""
    prefix = "reconciled_" if round_.full else ""
    return {f"{prefix}{what}_added": change.added, f"{prefix}{what}_updated": change.updated,
            f"{prefix}{what}_removed": change.removed}


def build_assets(partitions: dg.PartitionsDefinition,
                 runs: RunSettings | None = None) -> list[dg.AssetsDefinition]:
    common = dict(partitions_def=partitions, group_name=GROUP_NAME, pool=WAREHOUSE_POOL)
    runs = runs or RunSettings()
    # On the Graph readers only: the client has retried each request already; this retries the
    # whole read later, when a throttled or unavailable tenant may have recovered.
    graph_retry = dg.RetryPolicy(max_retries=runs.step_retries, delay=runs.step_retry_delay_seconds,
                                 backoff=dg.Backoff.EXPONENTIAL) if runs.step_retries else None

    @dg.asset(
        **common, kinds={"azure", "duckdb"},
        check_specs=c.specs(c.RAW_USERS_COMPLETE, c.DIRECTORY_NOT_EMPTY, c.NO_ORPHANED_DATA,
                            c.CERTIFICATE_NOT_EXPIRING, c.DIRECTORY_VALUES_FIT),
        retry_policy=graph_retry,
        description="Directory users read from Microsoft Graph, only the properties the mapping and exclusions "
                    "need. With read: delta (the default) the first sync is a full /users/delta round and later "
                    "syncs apply only the changes since the stored deltaLink (a full round again on "
                    "full_resync, every full_sync_every_days, or when Graph expires the token); with read: list "
                    "every sync reads /users whole. Rows, deltaLink and history change in one transaction.",
    )
    def raw_graph_users(context: dg.AssetExecutionContext, config: RawReadConfig,
                        integrations: IntegrationsResource, graph: GraphResource, warehouse: WarehouseResource):
        configured = integrations.load()
        integration = configured.get(context.partition_key)
        with warehouse.get_connection() as con:
            orphans = {k: n for k, n in admin.integrations_in_warehouse(con).items() if k not in configured.keys}
        if integration.kind != ENTRA:
            # The orphan check is about the warehouse, not the source: it runs for every integration.
            yield _not_theirs(integration, "Entra ID", [c.RAW_USERS_COMPLETE, c.DIRECTORY_NOT_EMPTY,
                                                        c.CERTIFICATE_NOT_EXPIRING, c.DIRECTORY_VALUES_FIT],
                              [c.orphans_result(orphans)])
            return
        stage = _Stage(context, integration)
        fields = integration.imported_fields()
        context_checks = [c.orphans_result(orphans), _certificate_check(integration)]
        if integration.source.read == "list":
            yield from _list_users(context, stage, integration, graph, warehouse, fields, context_checks)
            return
        select = delta_select_for(fields)
        with warehouse.get_connection() as con:
            state = raw_tables.delta_state(con, integration.key, "users")
            previous = table_rows.count_rows(con, s.RAW_GRAPH_USERS, integration.key)
        round_, reason, graph_meta = _delta_read(context, integration, graph, "users", select, state, config)
        checks = [c.delta_complete_result(c.RAW_USERS_COMPLETE, "users", round_), *context_checks]
        if c.failed_blocking(checks):
            yield from stage.blocked(checks)
        managers = any(f in MANAGER_FIELDS for f in fields)
        try:
            with warehouse.get_connection() as con, transaction(con):
                stored = {} if round_.full else raw_tables.stored_users(
                    con, integration.key, list(dict.fromkeys(i["id"] for i in round_.items
                                                             if values.usable_id(i["id"]))))
                # Before anything reaches DuckDB: a value beyond its limit is an import error about
                # that user and field (the stored users name who it is), never a failed stage.
                checked = values.check_users(round_.items, s.RAW_GRAPH_USERS, stored, track=not round_.full)
                users = delta.apply_users(stored, checked.items)
                if managers:
                    users = raw_tables.with_manager_mail(con, integration.key, users, round_.full)
                change = raw_tables.apply_raw_users(con, integration.key, context.run.run_id, round_.full, users)
                raw_tables.drop_other_source(con, integration.key, ENTRA)
                checks.append(c.directory_not_empty_result(change.total, previous))
                if c.failed_blocking(checks):
                    raise _Blocked
                change_log.log_changes(con, integration.key, s.RAW_GRAPH_USERS, context.run.run_id, change.changed_ids)
                import_errors.replace_value_issues(con, integration.key, s.RAW_GRAPH_USERS, context.run.run_id,
                                                   checked.issues, None if round_.full else checked.assessed)
                # Errors of earlier rounds stay until their value comes back fixed: the check counts them all.
                checks.append(c.issues_result(c.DIRECTORY_VALUES_FIT, import_errors.stage_issues(
                    con, integration.key, s.RAW_GRAPH_USERS, values.CODES)))
                change_log.write_fields_read(con, integration.key, s.RAW_GRAPH_USERS, context.run.run_id,
                                             imported_fields_for(fields))
                raw_tables.write_delta_state(con, integration.key, "users", context.run.run_id, round_.delta_link,
                                             select, None if round_.full else state.full_round_at)
                stage.record(con, **_stage_values(round_, reason, change, graph_meta))
                sample = table_rows.sample_rows(con, s.RAW_GRAPH_USERS, integration.key,
                                                ["id", "user_principal_name", "display_name", "mail"])
        except _Blocked:
            yield from stage.blocked(checks)
        yield stage.done(checks, {"rows": change.total, **_change_metadata(round_, change, "users"),
                                  "selected_properties": ", ".join(select), **graph_meta,
                                  "import_errors": len(checked.issues),
                                  "preview": _preview(sample, ["id", "user_principal_name", "display_name",
                                                               "mail"])})

    @dg.asset(
        **common, kinds={"azure", "duckdb"}, check_specs=c.specs(c.RAW_GROUPS_COMPLETE), retry_policy=graph_retry,
        description="Directory groups and each group's direct members. With read: delta a full /groups/delta "
                    "round (members selected: members@delta) the first time, then only changed groups and "
                    "membership additions and removals; with read: list /groups plus every group's "
                    "/members read 20 pages at a time through JSON $batch. Groups, memberships and deltaLink "
                    "change in one transaction.",
    )
    def raw_graph_groups(context: dg.AssetExecutionContext, config: RawReadConfig,
                         integrations: IntegrationsResource, graph: GraphResource, warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key)
        if integration.kind != ENTRA:
            yield _not_theirs(integration, "Entra ID", [c.RAW_GROUPS_COMPLETE])
            return
        stage = _Stage(context, integration)
        if integration.source.read == "list":
            yield from _list_groups(context, stage, integration, graph, warehouse)
            return
        select = [*GROUP_SELECT, "members"]
        with warehouse.get_connection() as con:
            state = raw_tables.delta_state(con, integration.key, "groups")
        round_, reason, graph_meta = _delta_read(context, integration, graph, "groups", select, state, config)
        checks = [c.delta_complete_result(c.RAW_GROUPS_COMPLETE, "groups", round_)]
        if c.failed_blocking(checks):
            yield from stage.blocked(checks)
        with warehouse.get_connection() as con, transaction(con):
            ids = list(dict.fromkeys(i["id"] for i in round_.items if values.usable_id(i["id"])))
            stored = {} if round_.full else raw_tables.stored_groups(con, integration.key, ids)
            checked = values.check_groups(round_.items, RAW_GROUPS_STAGE, stored, track=not round_.full)
            try:
                groups, members = delta.apply_groups(stored, checked.items)
            except GraphError as exc:
                raise dg.Failure(description=f"integration {integration.key!r}: reading groups failed: {exc}",
                                 allow_retries=False) from None
            kinds = {gid: lists.group_kind(g) for gid, g in groups.items() if g is not None}
            change = raw_tables.apply_raw_groups(con, integration.key, context.run.run_id, round_.full, groups,
                                                 members, kinds)
            change_log.log_changes(con, integration.key, s.RAW_GRAPH_GROUPS, context.run.run_id,
                                   None if change.structure_changed is None else
                                   [*(f"g:{g}" for g in change.structure_changed),
                                    *(f"u:{u}" for u in change.users_moved)])
            import_errors.replace_value_issues(con, integration.key, RAW_GROUPS_STAGE, context.run.run_id,
                                               checked.issues, None if round_.full else checked.assessed)
            raw_tables.write_delta_state(con, integration.key, "groups", context.run.run_id, round_.delta_link,
                                         select, None if round_.full else state.full_round_at)
            stage.record(con, **_stage_values(round_, reason, change, graph_meta))
            memberships = table_rows.count_rows(con, s.RAW_GRAPH_GROUP_MEMBERS, integration.key)
            sample = table_rows.sample_rows(con, s.RAW_GRAPH_GROUPS, integration.key,
                                            ["id", "display_name", "mail", "kind"])
        prefix = "reconciled_" if round_.full else ""
        yield stage.done(checks, {"groups": change.total, "memberships": memberships,
                                  "import_errors": len(checked.issues),
                                  **_change_metadata(round_, change, "groups"),
                                  f"{prefix}memberships_added": change.memberships_added,
                                  f"{prefix}memberships_removed": change.memberships_removed, **graph_meta,
                                  "preview": _preview(sample, ["id", "display_name", "mail", "kind"])})

    @dg.asset(
        **common, kinds={"workday", "duckdb"},
        check_specs=c.specs(c.WORKERS_NOT_EMPTIED, c.WORKERS_IDENTIFIED, c.REPORT_COLUMNS_DECIDED,
                            c.RULE_COLUMNS_IN_REPORT),
        retry_policy=graph_retry,
        description="Workday workers from the integration's custom report (Report-as-a-Service), one row per "
                    "worker keyed by id_field. RaaS has no change tracking, so every sync reads the whole report: "
                    "it is parsed while it streams into a staging file (the warehouse stays unlocked during the "
                    "download), then compared with the stored workers and replaced, with the change log and the "
                    "run log, in one transaction. Does nothing for Entra ID integrations.",
    )
    def raw_workday_workers(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                            workday: WorkdayResource, warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key)
        if integration.kind != WORKDAY:
            yield _not_theirs(integration, "Workday", [c.WORKERS_NOT_EMPTIED, c.WORKERS_IDENTIFIED,
                                                       c.REPORT_COLUMNS_DECIDED, c.RULE_COLUMNS_IN_REPORT])
            return
        yield from _read_workday(context, integration, workday, warehouse)

    @dg.asset(
        **common, kinds={"duckdb"}, deps=[raw_graph_users, raw_workday_workers],
        check_specs=c.specs(c.DIRECTORY_USERS_MAPPED, c.CONTACTS_HAVE_UNIQUE_ID, c.UNIQUE_CONTACT_IDS_DISTINCT,
                            c.CONTACT_VALUES_VALID, c.EXTENSION_ATTRIBUTES_DECIDED),
        description="Every directory user with a usable Unique Contact ID, mapped to contact fields (emails "
                    "lower-cased). Users without one, and duplicates, become import errors. Maps the users "
                    "changed since it last ran (and everyone sharing a Unique Contact ID with them), or all "
                    "of them after a full read or a mapping change; rows and mapping errors change in one "
                    "transaction.",
    )
    def mapped_contacts(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                        warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key)
        yield from _run_stage(context, warehouse, integration, _mapped_stage, SyncRunConfig())

    @dg.asset(
        **common, kinds={"duckdb"}, deps=[mapped_contacts],
        check_specs=c.specs(c.EXCLUSIONS_KEEP_CONTACTS, c.CONTACT_REMOVALS_WITHIN_LIMIT),
        description="The synced contacts: mapped contacts that no exclusion rule removed (table contacts), and "
                    "who was excluded by which rule (table excluded_contacts). Applies the exclusions to the "
                    "contacts that changed (all of them after a rule change) and updates both tables in one "
                    "transaction, appends who joined, changed or left to contact_changes, and in the same "
                    "transaction takes people who are no longer contacts off every list.",
    )
    def filtered_contacts(context: dg.AssetExecutionContext, config: SyncRunConfig,
                          integrations: IntegrationsResource, warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key)
        yield from _run_stage(context, warehouse, integration, _filtered_stage, config)

    @dg.asset(
        **common, kinds={"duckdb"}, deps=[filtered_contacts, raw_graph_groups],
        check_specs=c.specs(c.SELECTED_LISTS_RESOLVED, c.NO_LIST_REMOVED, c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT),
        description="Selected directory groups as distribution lists, resolved to contacts: nested groups "
                    "flattened (cycle-safe), only synced contacts as members. Lists change in Entra ID, not "
                    "here. Rebuilds the lists whose groups changed shape and recomputes the people whose "
                    "memberships or contact status changed (everything after a full read or a selection "
                    "change); lists, members and list errors change in one transaction.",
    )
    def distribution_lists(context: dg.AssetExecutionContext, config: SyncRunConfig,
                           integrations: IntegrationsResource, warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key)
        yield from _run_stage(context, warehouse, integration, _lists_stage, config)

    @dg.asset(
        partitions_def=partitions, group_name=PREVIEW_GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"},
        deps=[raw_graph_users, raw_graph_groups, raw_workday_workers],
        description="Preview (dry run) of a sync from the raw tables as they are: which contacts would join, "
                    "change (which fields) or leave, who would be excluded or no longer excluded, which lists "
                    "and list memberships would come or go, and which blocking check would stop the sync. "
                    "Computed inside a transaction that is rolled back, so the contact and list tables stay "
                    "byte-identical; the report replaces this integration's rows of sync_preview.",
    )
    def sync_preview(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                     warehouse: WarehouseResource):
        integration = integrations.get(context.partition_key)
        stage = _Stage(context, integration)
        run_id = context.run.run_id
        with warehouse.get_connection() as con:
            with rolled_back(con):  # the preview never changes the synced tables
                before = preview_report.preview_state(con, integration.key)
                would_block: list[dg.AssetCheckResult] = []
                for compute in (_mapped_stage, _filtered_stage, _lists_stage):
                    outcome = compute(con, integration, run_id, SyncRunConfig())
                    would_block += c.failed_blocking(outcome.checks)
                    outcome.write(con)
                rows = preview_report.preview_rows(con, integration.key, run_id, before)
            rows += [("check_would_block", None, None, {"check": r.check_name, "description": r.description})
                     for r in would_block]
            with transaction(con):
                preview_report.write_preview(con, integration.key, run_id, rows)
        counts = _counts(kind for kind, *_ in rows)
        context.log.info(f"preview of {integration.key!r}: " + (", ".join(f"{n:,} {k}" for k, n in counts.items())
                                                               or "no changes"))
        table = [{"change": k, "contact_id": cid, "list_id": lid, "details": json.dumps(d)[:80] if d else ""}
                 for k, cid, lid, d in rows[:PREVIEW_SAMPLE]]
        return stage.done([], {"changes": len(rows), "changes_by_kind": dg.MetadataValue.json(counts),
                               "would_block": ", ".join(r.check_name for r in would_block) or "nothing",
                               "report": _preview(table, ["change", "contact_id", "list_id", "details"],
                                                  PREVIEW_SAMPLE)})

    return [raw_graph_users, raw_graph_groups, raw_workday_workers, mapped_contacts, filtered_contacts,
            distribution_lists, sync_preview]


@dataclass
class _Outcome:
    """A stage's result before it is written: its checks, what its write does, and the numbers
    for sync_run_stages (added/updated/removed)."""

    checks: list[dg.AssetCheckResult]
    write: Callable[..., dict]
    stage_values: Callable[[], dict] = dict


def _run_stage(context: dg.AssetExecutionContext, warehouse: WarehouseResource, integration: Integration,
               compute: Callable[..., _Outcome], config: SyncRunConfig) -> Iterator:
    """Compute a stage and, if no blocking check fails, write it with its sync_run_stages row, all
    in one transaction: the write is based on exactly the rows the computation read."""
    stage = _Stage(context, integration)
    try:
        with warehouse.get_connection() as con, transaction(con):
            outcome = compute(con, integration, context.run.run_id, config)
            if c.failed_blocking(outcome.checks):
                raise _Blocked
            write_started = time.monotonic()
            metadata = outcome.write(con)
            stage.record(con, **outcome.stage_values())
            metadata["write_seconds"] = round(time.monotonic() - write_started, 3)
    except _Blocked:
        yield from stage.blocked(outcome.checks)
    yield stage.done(outcome.checks, metadata)


#: Above this share of changed rows an incremental stage recomputes everything (cheaper then).
INCREMENTAL_LIMIT = 0.25


def _fingerprint(*parts) -> str:
    """What a stage's rows were made with (configuration): another one means recompute all."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _incremental_input(con, integration: Integration, producer: str, consumer: str, fingerprint: str,
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


def _mapped_stage(con, integration: Integration, run_id: str, config: SyncRunConfig) -> _Outcome:
    # The mapping runs in DuckDB into a temporary table of this connection; the checks read it, and
    # only then (if nothing blocks) is it written.
    plan = mapping.plan_for(integration.mapping)
    unique_id = integration.mapping.unique_id
    undecided = integration.mapping.undecided_extension_attributes()
    custom = {name: f.type for name, f in integration.mapping.custom_fields.items()}
    raw = s.RAW_PEOPLE[integration.kind]
    available = _require_fields(con, integration, raw, integration.imported_fields())
    conflicts = s.custom_column_conflicts(con, custom)
    if conflicts:
        raise dg.Failure(description=f"integration {integration.key!r}: {conflicts[0]}; nothing was written",
                         allow_retries=False)
    fingerprint = _fingerprint(plan, unique_id, sorted(available), custom)
    changed, seq = _incremental_input(con, integration, raw, s.MAPPED_CONTACTS, fingerprint, raw)
    result = contact_tables.map_raw_users(con, integration.key, plan, unique_id, sorted(available), changed,
                                          integration.kind, sample_columns=PREVIEW_COLUMNS)
    candidates = result.candidates
    checks = [c.users_mapped_result(result.users_read, result.contacts),
              c.issues_result(c.CONTACTS_HAVE_UNIQUE_ID, result.issues),
              c.issues_result(c.UNIQUE_CONTACT_IDS_DISTINCT, result.issues),
              c.issues_result(c.CONTACT_VALUES_VALID, result.issues),
              c.extension_attributes_result(undecided,
                                            contact_tables.extension_value_counts(con, integration.key, undecided))
              if integration.kind == ENTRA else c.not_applicable(c.EXTENSION_ATTRIBUTES_DECIDED, integration.kind)]

    def write(con) -> dict:
        rows = contact_tables.write_mapped_contacts(con, integration.key, run_id, plan, custom, candidates)
        import_errors.replace_issues(con, integration.key, mapping.STAGE, run_id, result.issues, candidates)
        change_log.log_changes(con, integration.key, s.MAPPED_CONTACTS, run_id, candidates)
        change_log.consumed(con, integration.key, s.MAPPED_CONTACTS, raw, run_id, seq, fingerprint)
        # The imported column carries what the raw read selected; the contact columns what this
        # mapping fed.
        change_log.write_fields_read(con, integration.key, s.MAPPED_CONTACTS, run_id, available)
        change_log.write_fields_read(con, integration.key, MAPPED_CONTACT_FIELDS, run_id,
                                     [p.contact_field for p in plan if p.source])
        return {"rows": rows, "mode": "full" if candidates is None else "incremental",
                "users_mapped": result.users_read if candidates is None else len(candidates),
                "directory_users": result.users_read, "import_errors": len(result.issues),
                "errors_by_code": dg.MetadataValue.json(_counts(i.code for i in result.issues)),
                "custom_fields": ", ".join(f"{n} ({t})" for n, t in custom.items()),
                "preview": _preview(result.sample, PREVIEW_COLUMNS)}

    return _Outcome(checks, write)


def _filtered_stage(con, integration: Integration, run_id: str, config: SyncRunConfig) -> _Outcome:
    rules = integration.exclusions.all_rules()
    imported_needed = sorted(set().union(*(r.imported_fields() for r in rules)))
    contact_needed = sorted(set().union(*(r.contact_fields() for r in rules)))
    _require_fields(con, integration, s.MAPPED_CONTACTS, set(imported_needed))
    _require_fields(con, integration, MAPPED_CONTACT_FIELDS, set(contact_needed), "mapped_contacts")
    fingerprint = _fingerprint(integration.exclusions.model_dump_json(), imported_needed, contact_needed)
    only, seq = _incremental_input(con, integration, s.MAPPED_CONTACTS, FILTERED_STAGE, fingerprint,
                                   s.MAPPED_CONTACTS)
    mapped = contact_tables.read_for_rules(con, integration.key, contact_needed, imported_needed, source_ids=only)
    result = exclusions.apply_exclusions(mapped, rules)
    guard = integration.deletion_guard
    if only is None:
        current = contact_tables.contact_ids(con, integration.key)
        total, mapped_total, kept_total = len(current), len(mapped), len(result.kept)
    else:
        # Only the contacts of changed directory users can change: weigh them against the whole.
        current = contact_tables.contacts_of(con, integration.key, only)
        total = table_rows.count_rows(con, s.CONTACTS, integration.key)
        mapped_total = table_rows.count_rows(con, s.MAPPED_CONTACTS, integration.key)
        kept_total = total - len(current) + len(result.kept)
    removal = assess(current, (m["contact_id"] for m in result.kept), guard.max_removed, guard.max_removed_percent,
                     total)
    checks = [c.contacts_kept_result(mapped_total, kept_total),
              c.removal_result(c.CONTACT_REMOVALS_WITHIN_LIMIT, "contacts", removal, config.allow_removals)]
    changes: dict[str, int] = {}

    def write(con) -> dict:
        contact_tables.write_contacts_except(con, integration.key, run_id,
                                             (c["contact_id"] for c, _ in result.excluded), only)
        contact_tables.write_exclusions(con, integration.key, run_id, result.excluded, only)
        change_log.log_changes(con, integration.key, FILTERED_STAGE, run_id, only)
        pruned = list_tables.prune_list_members(con, integration.key)
        change_log.consumed(con, integration.key, FILTERED_STAGE, s.MAPPED_CONTACTS, run_id, seq, fingerprint)
        sample = table_rows.sample_rows(con, s.CONTACTS, integration.key, PREVIEW_COLUMNS)
        changes.update(contact_tables.change_counts(con, integration.key, run_id))
        excluded = dict(con.execute(f'SELECT rule, count(*) FROM "{s.EXCLUDED_CONTACTS}" WHERE integration = ? '
                                    "GROUP BY rule ORDER BY rule", [integration.key]).fetchall())
        return {"rows": kept_total, "mode": "full" if only is None else "incremental",
                "contacts_evaluated": len(mapped), "excluded": sum(excluded.values()),
                "list_members_removed": pruned,
                "contacts_joined": changes.get("joined", 0), "contacts_updated": changes.get("updated", 0),
                "contacts_left": changes.get("left", 0), "preview": _preview(sample, PREVIEW_COLUMNS),
                "excluded_by_rule": dg.MetadataValue.json(excluded),
                "rules": dg.MetadataValue.json([r.name for r in rules])}

    return _Outcome(checks, write, lambda: {"added": changes.get("joined", 0), "updated": changes.get("updated", 0),
                                            "removed": changes.get("left", 0)})


def _lists_stage(con, integration: Integration, run_id: str, config: SyncRunConfig) -> _Outcome:
    selection = integration.distribution_lists
    custom_imported = sorted(set().union(*(d.when.imported_fields() for d in selection.custom),
                                         {g.field for g in selection.generated if g.field}))
    custom_contact = sorted(set().union(*(d.when.contact_fields() for d in selection.custom),
                                        {g.contact_field for g in selection.generated if g.contact_field}))
    if selection.custom or selection.generated:
        _require_fields(con, integration, s.MAPPED_CONTACTS, set(custom_imported))
        _require_fields(con, integration, MAPPED_CONTACT_FIELDS, set(custom_contact), "mapped_contacts")
    fingerprint = _fingerprint(selection.model_dump_json(), custom_imported, custom_contact)
    raw = s.RAW_PEOPLE[integration.kind]
    moved, groups_seq = _incremental_input(con, integration, s.RAW_GRAPH_GROUPS, LISTS_FROM_GROUPS, fingerprint, raw)
    if integration.kind == WORKDAY:
        moved = set()  # no groups, so never a group change (an absent log would mean "recompute all")
    people_changed, contacts_seq = _incremental_input(con, integration, FILTERED_STAGE, LISTS_FROM_CONTACTS,
                                                      fingerprint, raw)
    groups = raw_tables.read_groups(con, integration.key)
    previous = list_tables.previous_lists(con, integration.key)
    # Generated lists come and go with their values: they are recomputed whole on every sync.
    if moved is None or people_changed is None or selection.generated:
        plan = _all_lists(con, integration, run_id, groups, custom_contact, custom_imported)
    else:
        plan = _changed_lists(con, integration, run_id, groups, previous, moved | people_changed, custom_contact,
                              custom_imported)
    issues = plan.selection_issues + lists.removed_lists(previous, [{"list_id": l} for l in plan.list_ids], groups,
                                                         plan.selection_issues)
    available = lists.available_groups(groups, raw_tables.direct_member_counts(con, integration.key), plan.selected)
    guard = integration.deletion_guard
    removal = assess(plan.current, plan.members, guard.max_removed, guard.max_removed_percent, plan.total)
    checks = [c.issues_result(c.SELECTED_LISTS_RESOLVED, issues), c.issues_result(c.NO_LIST_REMOVED, issues),
              c.removal_result(c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT, "list memberships", removal,
                               config.allow_removals)]
    added, removed = len(plan.members - plan.current), len(plan.current - plan.members)

    def write(con) -> dict:
        plan.write(con)
        list_tables.write_available_groups(con, integration.key, run_id, available)
        import_errors.replace_issues(con, integration.key, lists.STAGE, run_id, issues)
        change_log.consumed(con, integration.key, LISTS_FROM_GROUPS, s.RAW_GRAPH_GROUPS, run_id, groups_seq,
                            fingerprint)
        change_log.consumed(con, integration.key, LISTS_FROM_CONTACTS, FILTERED_STAGE, run_id, contacts_seq,
                            fingerprint)
        all_lists = [dict(zip(("display_name", "kind", "member_count", "users_excluded", "users_without_contact_id",
                               "nested_groups"), row)) for row in con.execute(
            f'SELECT display_name, kind, member_count, users_excluded, users_without_contact_id, nested_groups '
            f'FROM "{s.DISTRIBUTION_LISTS}" WHERE integration = ? ORDER BY member_count DESC, list_id',
            [integration.key]).fetchall()]
        return {"lists": len(all_lists), "mode": plan.mode, "lists_rebuilt": plan.rebuilt,
                "users_reconsidered": plan.users,
                "memberships": table_rows.count_rows(con, s.DISTRIBUTION_LIST_MEMBERS, integration.key),
                "custom_lists": len(selection.custom),
                "generated_lists": sum(1 for l in all_lists if l["kind"] == lists.KIND_GENERATED),
                "memberships_added": added, "memberships_removed": removed,
                "non_members": table_rows.count_rows(con, s.DISTRIBUTION_LIST_NON_MEMBERS, integration.key),
                "available_groups": len(available), "import_errors": len(issues),
                "lists_by_kind": dg.MetadataValue.json(_counts(l["kind"] for l in all_lists)),
                "preview": _preview(all_lists, ["display_name", "kind", "member_count", "users_excluded",
                                                "users_without_contact_id", "nested_groups"])}

    return _Outcome(checks, write, lambda: {"added": added, "removed": removed})


@dataclass
class _ListPlan:
    """What distribution_lists will write: the memberships before (``current``, of the part that
    changes) and after (``members``), the whole's size before, and the write itself."""

    mode: str
    selected: set[str]
    list_ids: set[str]
    selection_issues: list[ImportIssue]
    current: set[tuple[str, str]]
    members: set[tuple[str, str]]
    total: int
    write: Callable
    rebuilt: int
    users: int


def _all_lists(con, integration: Integration, run_id: str, groups: list[dict], custom_contact: list[str],
               custom_imported: list[str]) -> _ListPlan:
    """Every list resolved from every group and contact (first run, changed configuration, a
    full read, or too many changes)."""
    selection = integration.distribution_lists
    edges = {g["id"]: [] for g in groups}
    edges.update(raw_tables.read_edges(con, integration.key))
    people = contact_tables.people(con, integration.key)
    current = list_tables.memberships(con, integration.key)
    contacts = (contact_tables.read_for_rules(con, integration.key, custom_contact, custom_imported, s.CONTACTS)
                if selection.custom or selection.generated else [])
    result = lists.resolve_lists(groups, edges, people, selection.select, selection.ids, selection.names)
    custom = lists.custom_lists(contacts, selection.custom)
    generated = lists.generated_lists(contacts, selection.generated)
    all_lists = result.lists + custom.lists + generated.lists
    members = result.members + custom.members + generated.members

    def write(con) -> None:
        list_tables.write_lists(con, integration.key, run_id, all_lists, members, result.non_members)

    return _ListPlan("full", {l["source_group_id"] for l in result.lists}, {l["list_id"] for l in all_lists},
                     result.issues, current, set(members), len(current), write, len(all_lists), len(people.read))


def _changed_lists(con, integration: Integration, run_id: str, groups: list[dict], previous: dict[str, str],
                   changed: set[str], custom_contact: list[str], custom_imported: list[str]) -> _ListPlan:
    """Only what changed since the last lists write. ``changed`` holds ``g:<group id>`` for groups
    whose shape changed (rebuilt whole, with every list containing them) and the directory user
    ids whose memberships or contact status may have changed (``u:<id>`` from group changes,
    plain ids from the contact stages): their rows are recomputed in every other list."""
    selection = integration.distribution_lists
    selected_groups, selection_issues = lists.select_groups(groups, selection.select, selection.ids,
                                                            selection.names)
    selected = {g["id"] for g in selected_groups}
    custom_ids = {lists.custom_list_id(d.name) for d in selection.custom}
    parents = raw_tables.group_parents(con, integration.key)
    structural = {x[2:] for x in changed if x.startswith("g:")}
    users = {x[2:] if x.startswith("u:") else x for x in changed if not x.startswith("g:")}
    rebuild = (lists.reachable(parents, structural) & selected) | (selected - previous.keys())
    drop = rebuild | (previous.keys() - selected - custom_ids)

    rebuilt = lists.ResolvedLists()
    if rebuild:
        children: dict[str, set[str]] = {}
        for child, ups in parents.items():
            for parent in ups:
                children.setdefault(parent, set()).add(child)
        closure = lists.reachable(children, rebuild)
        edges = {gid: [] for gid in closure}
        edges.update(raw_tables.read_edges(con, integration.key, closure))
        in_closure = {m for links in edges.values() for t, m in links if t == lists.USER}
        rebuilt = lists.resolve_groups([g for g in selected_groups if g["id"] in rebuild], edges,
                                       contact_tables.people(con, integration.key, in_closure))

    people = contact_tables.people(con, integration.key, users)
    direct = raw_tables.user_groups(con, integration.key, users)
    lists_of_group: dict[str, set[str]] = {}
    members: set[tuple[str, str]] = set()
    non_members: set[tuple[str, str, str, str]] = set()
    contacts: set[str] = set()
    for user in users:
        on = set()
        for group in direct.get(user, ()):
            if group not in lists_of_group:
                lists_of_group[group] = (lists.reachable(parents, [group]) & selected) - rebuild
            on |= lists_of_group[group]
        if user in people.contacts:
            contacts.add(people.contacts[user])
            members |= {(list_id, people.contacts[user]) for list_id in on}
        else:
            reason = lists.why_not_member(user, people)
            non_members |= {(list_id, user, lists.USER, reason) for list_id in on}
    if selection.custom:
        changed_contacts = contact_tables.read_for_rules(con, integration.key, custom_contact, custom_imported,
                                                         s.CONTACTS, source_ids=users)
        members |= set(lists.custom_lists(changed_contacts, selection.custom).members)
    current = list_tables.list_rows_of(con, integration.key, contacts, drop)
    members |= set(rebuilt.members)
    non_members |= set(rebuilt.non_members)

    def write(con) -> None:
        list_tables.write_list_changes(con, integration.key, run_id, rebuilt.lists, drop, contacts, users, members,
                                       non_members)

    return _ListPlan("incremental", selected, selected | custom_ids, selection_issues, current, members,
                     table_rows.count_rows(con, s.DISTRIBUTION_LIST_MEMBERS, integration.key), write,
                     len(rebuilt.lists), len(users))
