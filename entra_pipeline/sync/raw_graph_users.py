"""Stage raw_graph_users: the directory's users, only the properties the mapping and exclusions
need. With read: delta the changes since the stored deltaLink (or a full round); with read: list
every user through /users. Rows, import errors, deltaLink and history change in one transaction."""

from __future__ import annotations

from datetime import datetime, timezone

from entra_pipeline.config import ConfigError, Integration
from entra_pipeline.config.credentials import certificate
from entra_pipeline.sources.graph import delta
from entra_pipeline.sources.graph.pages import DeltaRound
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names
from entra_pipeline.sync.graph_reads import (GraphRead, OpenGraph, change_metadata, progress, read, read_resource,
                                            stage_values)
from entra_pipeline.sync.options import RawReadOptions
from entra_pipeline.sync.outcome import StageOutcome, preview
from entra_pipeline.sync.runner import StageFailed, StageRun, checked_write
from entra_pipeline.transform import values
from entra_pipeline.transform.fields import (ENTRA, graph_select_for, imported_fields_for, manager_expand_for,
                                             reads_manager)
from entra_pipeline.warehouse import (change_log, connection, contact_tables, graph_staging, import_errors, raw_tables,
                                     table_rows)

SAMPLE_COLUMNS = ["id", "user_principal_name", "display_name", "mail"]


def certificate_check(integration: Integration) -> c.CheckOutcome:
    """Whether the sign-in certificate (if any) is far enough from expiring."""
    info = None
    if integration.source.auth == "certificate":
        try:
            info = certificate(integration)[1]
        except ConfigError as exc:
            raise StageFailed(str(exc)) from None
    return c.certificate_result(integration.source.auth, info, datetime.now(timezone.utc))


def extension_attributes_check(con, integration: Integration) -> c.CheckOutcome:
    """Which extension attributes the mapping neither maps nor skips, with how many users carry each."""
    undecided = integration.mapping.undecided_extension_attributes()
    counts = contact_tables.extension_value_counts(con, integration.key, undecided)
    return c.extension_attributes_result(undecided, counts)


def materialize(run: StageRun, open_graph: OpenGraph, options: dict[str, RawReadOptions]) -> StageOutcome:
    """``options``: the run's read options of each Graph resource (the other one may be read ahead)."""
    integration = run.integration
    fields = integration.imported_fields()
    certificate = certificate_check(integration)
    if integration.source.read == "list":
        return _list_users(run, open_graph, fields, certificate)
    read = read_resource(run, open_graph, "users", options)
    try:
        return _write_round(run, read, certificate, fields)
    finally:
        read.close()


def _write_round(run: StageRun, read: GraphRead, certificate: c.CheckOutcome, fields: set[str]) -> StageOutcome:
    integration = run.integration
    state, previous, select, round_, graph_meta = read.state, read.previous, read.select, read.round_, read.meta
    checks = [c.delta_complete_result(c.RAW_USERS_COMPLETE, "users", round_), certificate]
    run.block(checks)
    staged = read.staged
    with run.warehouse() as con, graph_staging.attached(con, staged), connection.transaction(con):
        if staged is not None:
            # A full round, staged as it streamed (values already checked page by page).
            change = graph_staging.apply_staged_users(con, integration.key, run.run_id, staged)
            issues, assessed = staged.issues, None
        else:
            change, issues, assessed = _apply_round(con, run, round_, reads_manager(fields))  # a round of changes
        raw_tables.drop_other_source(con, integration.key, ENTRA)
        checks.append(c.directory_not_empty_result(change.total, previous))
        run.block(checks)  # raising inside the transaction rolls it back
        # After a full round every stage after this one recomputes everything: the contacts and lists
        # come out exactly as the directory makes them, hand edits in the warehouse included.
        change_log.log_changes(con, integration.key, names.RAW_GRAPH_USERS, run.run_id,
                               None if round_.full else change.changed_ids)
        import_errors.replace_value_issues(con, integration.key, names.RAW_GRAPH_USERS, run.run_id, issues, assessed)
        # Errors of earlier rounds stay until their value comes back fixed: the check counts them all.
        checks.append(c.issues_result(c.DIRECTORY_VALUES_FIT, import_errors.stage_issues(
            con, integration.key, names.RAW_GRAPH_USERS, values.CODES)))
        checks.append(extension_attributes_check(con, integration))
        change_log.write_fields_read(con, integration.key, names.RAW_GRAPH_USERS, run.run_id,
                                     imported_fields_for(fields))
        raw_tables.write_delta_state(con, integration.key, "users", run.run_id, round_.delta_link, select,
                                     None if round_.full else state.full_round_at)
        run.record(con, **stage_values(round_, read.reason, change, graph_meta))
        run.describe(con)
        sample = table_rows.sample_rows(con, names.RAW_GRAPH_USERS, integration.key, SAMPLE_COLUMNS)
    return run.done(checks, {"rows": change.total, **change_metadata(round_, change, "users"),
                             "selected_properties": ", ".join(select), **graph_meta,
                             "import_errors": len(issues), "preview": preview(sample, SAMPLE_COLUMNS)})


def _apply_round(con, run: StageRun, round_: DeltaRound, managers: bool) -> tuple:
    """A round of changes patched onto the stored users: (the change, its import errors, what it
    assessed)."""
    key = run.integration.key
    stored = raw_tables.stored_users(
        con, key, list(dict.fromkeys(i["id"] for i in round_.items if values.usable_id(i["id"]))))
    # Before anything reaches DuckDB: a value beyond its limit is an import error about that
    # user and field (the stored users name who it is), never a failed stage.
    checked = values.check_users(round_.items, names.RAW_GRAPH_USERS, stored)
    users = delta.apply_users(stored, checked.items)
    if managers:
        users = raw_tables.with_manager_mail(con, key, users)
    return raw_tables.apply_raw_users(con, key, run.run_id, users), checked.issues, checked.assessed


def _list_users(run: StageRun, open_graph: OpenGraph, fields: set[str], certificate: c.CheckOutcome) -> StageOutcome:
    """read: list — every user through /users (with $count), replacing the integration's rows."""
    integration = run.integration
    select, expand = graph_select_for(fields), manager_expand_for(fields)
    report = progress(run)
    users, graph_meta = read(integration, open_graph, "users", lambda client: client.list_users(select, expand, report))
    # Before anything reaches DuckDB: a value beyond its limit is an import error, not a failed stage.
    checked = values.check_users(users.items, names.RAW_GRAPH_USERS, track=False)

    def write() -> dict:
        with run.warehouse() as con, connection.transaction(con):
            rows = raw_tables.write_raw_users(con, integration.key, run.run_id, checked.items)
            import_errors.replace_value_issues(con, integration.key, names.RAW_GRAPH_USERS, run.run_id,
                                               checked.issues, None)
            raw_tables.drop_other_source(con, integration.key, ENTRA)
            change_log.log_changes(con, integration.key, names.RAW_GRAPH_USERS, run.run_id, None)
            change_log.write_fields_read(con, integration.key, names.RAW_GRAPH_USERS, run.run_id,
                                         imported_fields_for(fields))
            # A later switch back to delta starts with a full round, not from a stale token.
            raw_tables.write_delta_state(con, integration.key, "users", run.run_id, None, [], None)
            run.record(con, read_mode="full", read_reason="read: list", changes_read=None,
                       graph_requests=graph_meta["graph_requests"], graph_bytes=graph_meta["graph_bytes"])
            run.describe(con)
            checks.append(extension_attributes_check(con, integration))
        return {"rows": rows, "graph_reported_count": users.reported_count, "pages": users.pages,
                "selected_properties": ", ".join(select), "expand": expand or "", **graph_meta,
                "import_errors": len(checked.issues),
                "preview": preview(checked.items, ["id", "userPrincipalName", "displayName", "mail"])}

    with run.warehouse() as con:
        previous = table_rows.count_rows(con, names.RAW_GRAPH_USERS, integration.key)
    checks = [c.users_complete_result(users, integration.source.page_size),
              c.directory_not_empty_result(len(users.items), previous), certificate,
              c.issues_result(c.DIRECTORY_VALUES_FIT, checked.issues)]
    return checked_write(run, checks, write)
