"""Stage distribution_lists: the selected directory groups as lists resolved to contacts (nested
groups flattened, cycle-safe, only synced contacts as members), and the custom and generated lists
built from contact fields. Lists, members and list errors change in one transaction."""

from __future__ import annotations

from entra_pipeline.config import Integration
from entra_pipeline.sync import checks as c
from entra_pipeline.sync import names
from entra_pipeline.sync.incremental import fingerprint, incremental_input
from entra_pipeline.sync.lists_plan import all_lists, changed_lists
from entra_pipeline.sync.options import SyncOptions
from entra_pipeline.sync.outcome import Json, counts, preview
from entra_pipeline.sync.runner import Prepared, require_fields
from entra_pipeline.transform import lists
from entra_pipeline.transform.fields import WORKDAY
from entra_pipeline.transform.guard import judge
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse import change_log, import_errors, list_tables, raw_tables, summaries, table_rows


def compute(con, integration: Integration, run_id: str, options: SyncOptions) -> Prepared:
    selection = integration.distribution_lists
    custom_imported = sorted(set().union(*(d.when.imported_fields() for d in selection.custom),
                                         {g.field for g in selection.generated if g.field}))
    custom_contact = sorted(set().union(*(d.when.contact_fields() for d in selection.custom),
                                        {g.contact_field for g in selection.generated if g.contact_field}))
    if selection.custom or selection.generated:
        require_fields(con, integration, names.MAPPED_CONTACTS, set(custom_imported))
        require_fields(con, integration, names.MAPPED_CONTACT_FIELDS, set(custom_contact), names.MAPPED_CONTACTS)
    made_with = fingerprint(selection.model_dump_json(), custom_imported, custom_contact)
    raw = s.RAW_PEOPLE[integration.kind]
    moved, groups_seq = incremental_input(con, integration, names.RAW_GRAPH_GROUPS, names.LISTS_FROM_GROUPS,
                                          made_with, raw)
    if integration.kind == WORKDAY:
        moved = set()  # no groups, so never a group change (an absent log would mean "recompute all")
    people_changed, contacts_seq = incremental_input(con, integration, names.FILTERED_CONTACTS,
                                                     names.LISTS_FROM_CONTACTS, made_with, raw)
    groups = raw_tables.read_groups(con, integration.key)
    previous = list_tables.previous_lists(con, integration.key)
    # Generated lists come and go with their values: they are recomputed whole on every sync.
    if moved is None or people_changed is None or selection.generated:
        plan = all_lists(con, integration, run_id, groups, custom_contact, custom_imported)
    else:
        plan = changed_lists(con, integration, run_id, groups, previous, moved | people_changed, custom_contact,
                             custom_imported)
    issues = plan.selection_issues + lists.removed_lists(previous, [{"list_id": l} for l in plan.list_ids], groups,
                                                         plan.selection_issues)
    available = lists.available_groups(groups, raw_tables.direct_member_counts(con, integration.key), plan.selected)
    guard = integration.deletion_guard
    removal = judge(plan.size, plan.removed, plan.sample, guard.max_removed, guard.max_removed_percent)
    checks = [c.issues_result(c.SELECTED_LISTS_RESOLVED, issues), c.issues_result(c.NO_LIST_REMOVED, issues),
              c.removal_result(c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT, "list memberships", removal,
                               options.allow_removals)]
    added, removed = plan.added, plan.removed

    def write(con) -> dict:
        plan.write(con)
        list_tables.write_available_groups(con, integration.key, run_id, available)
        import_errors.replace_issues(con, integration.key, lists.STAGE, run_id, issues)
        change_log.consumed(con, integration.key, names.LISTS_FROM_GROUPS, names.RAW_GRAPH_GROUPS, run_id, groups_seq,
                            made_with)
        change_log.consumed(con, integration.key, names.LISTS_FROM_CONTACTS, names.FILTERED_CONTACTS, run_id,
                            contacts_seq, made_with)
        summary = summaries.list_summaries(con, integration.key)
        return {"lists": len(summary), "mode": plan.mode, "lists_rebuilt": plan.rebuilt,
                "users_reconsidered": plan.users,
                "memberships": table_rows.count_rows(con, s.DISTRIBUTION_LIST_MEMBERS, integration.key),
                "custom_lists": len(selection.custom),
                "generated_lists": sum(1 for l in summary if l["kind"] == lists.KIND_GENERATED),
                "memberships_added": added, "memberships_removed": removed,
                "non_members": table_rows.count_rows(con, s.DISTRIBUTION_LIST_NON_MEMBERS, integration.key),
                "available_groups": len(available), "import_errors": len(issues),
                "lists_by_kind": Json(counts(l["kind"] for l in summary)),
                "preview": preview(summary, list(summaries.LIST_SUMMARY_COLUMNS))}

    return Prepared(checks, write, lambda: {"added": added, "removed": removed})
