"""Stage raw_graph_groups: every group and each group's direct members. With read: delta the
changed groups and membership additions and removals (or a full round); with read: list /groups
plus every group's /members through $batch. Groups, memberships and deltaLink change in one
transaction."""

from __future__ import annotations

from entra_pipeline.sources.graph import delta
from entra_pipeline.sources.graph.client import Collection, GraphClient, GraphError, member_type
from entra_pipeline.sources.graph.pages import DeltaRound
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names
from entra_pipeline.sync.graph_reads import (GraphRead, OpenGraph, change_metadata, progress, read, read_resource,
                                            stage_values)
from entra_pipeline.sync.options import RawReadOptions
from entra_pipeline.sync.outcome import Json, StageOutcome, counts, preview
from entra_pipeline.sync.runner import StageFailed, StageRun, checked_write
from entra_pipeline.transform import lists, values
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import GROUP_SELECT
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse import change_log, connection, graph_staging, import_errors, raw_tables, table_rows

GROUP_VANISHED = "group_vanished"
SAMPLE_COLUMNS = ["id", "display_name", "mail", "kind"]


def materialize(run: StageRun, open_graph: OpenGraph, options: dict[str, RawReadOptions]) -> StageOutcome:
    """``options``: the run's read options of each Graph resource (the other one may be read ahead)."""
    integration = run.integration
    if integration.source.read == "list":
        return _list_groups(run, open_graph)
    read = read_resource(run, open_graph, "groups", options)
    try:
        return _write_round(run, read)
    finally:
        read.close()


def _write_round(run: StageRun, read: GraphRead) -> StageOutcome:
    integration = run.integration
    state, select, round_, graph_meta, staged = read.state, read.select, read.round_, read.meta, read.staged
    checks = [c.delta_complete_result(c.RAW_GROUPS_COMPLETE, "groups", round_)]
    run.block(checks)
    with run.warehouse() as con, graph_staging.attached(con, staged), connection.transaction(con):
        if staged is not None:
            # A full round, staged as it streamed (values already checked page by page).
            change = graph_staging.apply_staged_groups(con, integration.key, run.run_id, staged)
            issues, assessed = staged.issues, None
        else:
            change, issues, assessed = _apply_round(con, run, round_)  # a round of changes
        change_log.log_changes(con, integration.key, names.RAW_GRAPH_GROUPS, run.run_id,
                               None if round_.full or change.structure_changed is None else
                               [*(f"g:{g}" for g in change.structure_changed), *(f"u:{u}" for u in change.users_moved)])
        import_errors.replace_value_issues(con, integration.key, names.RAW_GRAPH_GROUPS, run.run_id, issues, assessed)
        raw_tables.write_delta_state(con, integration.key, "groups", run.run_id, round_.delta_link, select,
                                     None if round_.full else state.full_round_at)
        run.record(con, **stage_values(round_, read.reason, change, graph_meta))
        run.describe(con)
        memberships = table_rows.count_rows(con, s.RAW_GRAPH_GROUP_MEMBERS, integration.key)
        sample = table_rows.sample_rows(con, names.RAW_GRAPH_GROUPS, integration.key, SAMPLE_COLUMNS)
    prefix = "reconciled_" if round_.full else ""
    return run.done(checks, {"groups": change.total, "memberships": memberships, "import_errors": len(issues),
                             **change_metadata(round_, change, "groups"),
                             f"{prefix}memberships_added": change.memberships_added,
                             f"{prefix}memberships_removed": change.memberships_removed, **graph_meta,
                             "preview": preview(sample, SAMPLE_COLUMNS)})


def _apply_round(con, run: StageRun, round_: DeltaRound) -> tuple:
    """A round of changes patched onto the stored groups and memberships: (the change, its import
    errors, what it assessed)."""
    key = run.integration.key
    stored = raw_tables.stored_groups(con, key, list(dict.fromkeys(i["id"] for i in round_.items
                                                                   if values.usable_id(i["id"]))))
    checked = values.check_groups(round_.items, names.RAW_GRAPH_GROUPS, stored)
    try:
        groups, members = delta.apply_groups(stored, checked.items)
    except GraphError as exc:
        raise StageFailed(f"integration {key!r}: reading groups failed: {exc}") from None
    kinds = {gid: lists.group_kind(g) for gid, g in groups.items() if g is not None}
    change = raw_tables.apply_raw_groups(con, key, run.run_id, groups, members, kinds)
    return change, checked.issues, checked.assessed


def _list_groups(run: StageRun, open_graph: OpenGraph) -> StageOutcome:
    """read: list — every group through /groups and its members through $batch."""
    integration = run.integration
    report = progress(run)

    def fetch(client: GraphClient) -> tuple[Collection, dict]:
        groups = client.list_groups(GROUP_SELECT, report)
        return groups, client.group_members([g["id"] for g in groups.items], report)

    (groups, members), graph_meta = read(integration, open_graph, "groups", fetch)
    # A group deleted between listing groups and reading its members is left out, and said.
    vanished = [g for g in groups.items if members[g["id"]] is None]
    issues = [ImportIssue(names.RAW_GRAPH_GROUPS, g["id"], None, GROUP_VANISHED,
                          f"group {g.get('displayName')!r} was deleted while the sync read it; left out")
              for g in vanished]
    checked = values.check_groups([g for g in groups.items if members[g["id"]] is not None], names.RAW_GRAPH_GROUPS,
                                  track=False)
    issues += checked.issues
    kept = checked.items
    read_members = {g["id"]: members[g["id"]] for g in kept}
    usable: dict[str, list[dict]] = {}
    for gid, collection in read_members.items():
        usable[gid], bad_members = values.check_members(gid, collection.items, names.RAW_GRAPH_GROUPS)
        issues += bad_members
    try:
        edges = {gid: [(member_type(m), m["id"]) for m in items] for gid, items in usable.items()}
    except GraphError as exc:
        raise StageFailed(f"integration {integration.key!r}: reading group members failed: {exc}") from None
    kinds = {g["id"]: lists.group_kind(g) for g in kept}

    def write() -> dict:
        with run.warehouse() as con, connection.transaction(con):
            n_groups, n_members = raw_tables.write_raw_groups(con, integration.key, run.run_id, kept, kinds, edges)
            import_errors.replace_issues(con, integration.key, names.RAW_GRAPH_GROUPS, run.run_id, issues)
            change_log.log_changes(con, integration.key, names.RAW_GRAPH_GROUPS, run.run_id, None)
            raw_tables.write_delta_state(con, integration.key, "groups", run.run_id, None, [], None)
            run.record(con, read_mode="full", read_reason="read: list", changes_read=None,
                       graph_requests=graph_meta["graph_requests"], graph_bytes=graph_meta["graph_bytes"])
            run.describe(con)
        return {"groups": n_groups, "memberships": n_members, "graph_reported_count": groups.reported_count,
                "groups_vanished": len(vanished), "import_errors": len(issues),
                "groups_by_kind": Json(counts(kinds.values())), **graph_meta,
                "preview": preview(kept, ["id", "displayName", "mail", "groupTypes"])}

    check = c.groups_complete_result(groups, read_members, integration.source.page_size)
    return checked_write(run, [check], write)

