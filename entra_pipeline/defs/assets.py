"""The sync, left to right: raw Graph users and groups -> mapped contacts -> filtered contacts ->
distribution lists. One partition per integration; each asset replaces its own integration's rows
in one transaction, so a failed or blocked asset leaves its previous rows intact, the assets after
it do not run, and no asset touches another integration.
"""

import time
from typing import Callable, Iterator

import dagster as dg
from tabulate import tabulate

from entra_pipeline.config import ConfigError, Integration
from entra_pipeline.defs import checks as c
from entra_pipeline.defs.resources import WAREHOUSE_POOL, GraphResource, IntegrationsResource, WarehouseResource
from entra_pipeline.graph.client import Collection, GraphClient, GraphError, member_type
from entra_pipeline.transform import exclusions, lists, mapping
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import graph_select_for, imported_fields_for, manager_expand_for
from entra_pipeline.transform.guard import assess
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse import store
from entra_pipeline.warehouse.store import transaction

GROUP_NAME = "entra_sync"
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
        raise dg.Failure(description=f"integration {integration.key!r}: reading {what} failed: {exc}",
                         allow_retries=False) from None
    metadata = {**{f"graph_{k}": v for k, v in client.stats.as_dict().items()},
                "graph_seconds": round(time.monotonic() - started, 3)}
    return result, metadata


def _require_fields(con, integration: Integration, stage: str, needed: set[str],
                    asset: str | None = None) -> set[str]:
    """The fields ``stage``'s rows carry; Failure if the configuration needs others (the mapping or
    exclusions changed since that stage last ran)."""
    asset = asset or stage
    available = store.fields_read(con, integration.key, stage)
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


def _checked_write(integration: Integration, results: list[dg.AssetCheckResult],
                   write: Callable[[], dict], started: float) -> Iterator:
    """Write only if no blocking check failed; otherwise report the checks and fail the step."""
    blocked = c.failed_blocking(results)
    if blocked:
        yield from results
        reasons = "; ".join(r.description or r.check_name for r in blocked)
        raise dg.Failure(description=f"integration {integration.key!r}: {reasons}; nothing was written",
                         allow_retries=False)
    write_started = time.monotonic()
    metadata = write()
    metadata["write_seconds"] = round(time.monotonic() - write_started, 3)
    metadata["seconds"] = round(time.monotonic() - started, 3)
    yield dg.MaterializeResult(metadata=metadata, check_results=results)


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    common = dict(partitions_def=partitions, group_name=GROUP_NAME, pool=WAREHOUSE_POOL)

    @dg.asset(
        **common, kinds={"azure", "duckdb"}, check_specs=c.specs(c.RAW_USERS_COMPLETE, c.DIRECTORY_NOT_EMPTY),
        description="Directory users read from Microsoft Graph (/users, only the properties the mapping "
                    "and exclusions need). Replaces this integration's rows in one transaction.",
    )
    def raw_graph_users(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                        graph: GraphResource, warehouse: WarehouseResource):
        started = time.monotonic()
        integration = integrations.get(context.partition_key)
        fields = integration.imported_fields()
        select, expand = graph_select_for(fields), manager_expand_for(fields)
        progress = _progress(context)
        users, graph_meta = _read(integration, graph, "users",
                                  lambda client: client.list_users(select, expand, progress))

        def write() -> dict:
            with warehouse.get_connection() as con, transaction(con):
                rows = store.write_raw_users(con, integration.key, context.run.run_id, users.items)
                store.write_fields_read(con, integration.key, s.RAW_GRAPH_USERS, context.run.run_id,
                                        imported_fields_for(fields))
            return {"rows": rows, "graph_reported_count": users.reported_count, "pages": users.pages,
                    "selected_properties": ", ".join(select), "expand": expand or "", **graph_meta,
                    "preview": _preview(users.items, ["id", "userPrincipalName", "displayName", "mail"])}

        with warehouse.get_connection() as con:
            previous = store.count_rows(con, s.RAW_GRAPH_USERS, integration.key)
        checks = [c.users_complete_result(users, integration.source.page_size),
                  c.directory_not_empty_result(len(users.items), previous)]
        yield from _checked_write(integration, checks, write, started)

    @dg.asset(
        **common, kinds={"azure", "duckdb"}, check_specs=c.specs(c.RAW_GROUPS_COMPLETE),
        description="Directory groups (/groups) and each group's direct members (/groups/{id}/members, read "
                    "20 pages at a time through JSON $batch). "
                    "Replaces this integration's rows of raw_graph_groups and raw_graph_group_members in "
                    "one transaction.",
    )
    def raw_graph_groups(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                         graph: GraphResource, warehouse: WarehouseResource):
        started = time.monotonic()
        integration = integrations.get(context.partition_key)
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
        kept = [g for g in groups.items if members[g["id"]] is not None]
        read = {g["id"]: members[g["id"]] for g in kept}
        try:
            edges = {gid: [(member_type(m), m["id"]) for m in c.items] for gid, c in read.items()}
        except GraphError as exc:
            raise dg.Failure(description=f"integration {integration.key!r}: reading group members failed: {exc}",
                             allow_retries=False) from None
        kinds = {g["id"]: lists.group_kind(g) for g in kept}

        def write() -> dict:
            with warehouse.get_connection() as con, transaction(con):
                n_groups, n_members = store.write_raw_groups(con, integration.key, context.run.run_id,
                                                             kept, kinds, edges)
                store.replace_issues(con, integration.key, RAW_GROUPS_STAGE, context.run.run_id, issues)
            return {"groups": n_groups, "memberships": n_members, "graph_reported_count": groups.reported_count,
                    "groups_vanished": len(vanished),
                    "groups_by_kind": dg.MetadataValue.json(_counts(kinds.values())), **graph_meta,
                    "preview": _preview(groups.items, ["id", "displayName", "mail", "groupTypes"])}

        check = c.groups_complete_result(groups, read, integration.source.page_size)
        yield from _checked_write(integration, [check], write, started)

    @dg.asset(
        **common, kinds={"duckdb"}, deps=[raw_graph_users],
        check_specs=c.specs(c.DIRECTORY_USERS_MAPPED, c.CONTACTS_HAVE_UNIQUE_ID, c.UNIQUE_CONTACT_IDS_DISTINCT,
                            c.CONTACT_VALUES_VALID, c.EXTENSION_ATTRIBUTES_DECIDED),
        description="Every directory user with a usable Unique Contact ID, mapped to contact fields (emails "
                    "lower-cased). Users without one, and duplicates, become import errors. Replaces this "
                    "integration's rows and mapping errors in one transaction.",
    )
    def mapped_contacts(context: dg.AssetExecutionContext, integrations: IntegrationsResource,
                        warehouse: WarehouseResource):
        started = time.monotonic()
        integration = integrations.get(context.partition_key)
        plan = mapping.plan_for(integration.mapping)
        unique_id = integration.mapping.unique_id
        undecided = integration.mapping.undecided_extension_attributes()
        custom = {name: f.type for name, f in integration.mapping.custom_fields.items()}
        # One connection: the mapping runs in DuckDB into a temporary table, the checks read it, and
        # only then (if nothing blocks) is it written.
        with warehouse.get_connection() as con:
            available = _require_fields(con, integration, s.RAW_GRAPH_USERS, integration.imported_fields())
            conflicts = s.custom_column_conflicts(con, custom)
            if conflicts:
                raise dg.Failure(description=f"integration {integration.key!r}: {conflicts[0]}; nothing was written",
                                 allow_retries=False)
            result = store.map_raw_users(con, integration.key, plan, unique_id, sorted(available))
            checks = [c.users_mapped_result(result.users_read, result.contacts),
                      c.issues_result(c.CONTACTS_HAVE_UNIQUE_ID, result.issues),
                      c.issues_result(c.UNIQUE_CONTACT_IDS_DISTINCT, result.issues),
                      c.issues_result(c.CONTACT_VALUES_VALID, result.issues),
                      c.extension_attributes_result(undecided,
                                                    store.extension_value_counts(con, integration.key, undecided))]

            def write() -> dict:
                with transaction(con):
                    rows = store.write_mapped_contacts(con, integration.key, context.run.run_id, plan, custom)
                    store.replace_issues(con, integration.key, mapping.STAGE, context.run.run_id, result.issues)
                    # The imported column carries what the raw read selected; the contact columns what
                    # this mapping fed.
                    store.write_fields_read(con, integration.key, s.MAPPED_CONTACTS, context.run.run_id, available)
                    store.write_fields_read(con, integration.key, MAPPED_CONTACT_FIELDS, context.run.run_id,
                                            [p.contact_field for p in plan if p.source])
                return {"rows": rows, "directory_users": result.users_read, "import_errors": len(result.issues),
                        "errors_by_code": dg.MetadataValue.json(_counts(i.code for i in result.issues)),
                        "custom_fields": ", ".join(f"{n} ({t})" for n, t in custom.items()),
                        "preview": _preview(result.sample, PREVIEW_COLUMNS)}

            yield from _checked_write(integration, checks, write, started)

    @dg.asset(
        **common, kinds={"duckdb"}, deps=[mapped_contacts],
        check_specs=c.specs(c.EXCLUSIONS_KEEP_CONTACTS, c.CONTACT_REMOVALS_WITHIN_LIMIT),
        description="The synced contacts: mapped contacts that no exclusion rule removed (table contacts), and "
                    "who was excluded by which rule (table excluded_contacts). Replaces this integration's "
                    "rows of both in one transaction, and in the same transaction takes people who are no "
                    "longer contacts off every list.",
    )
    def filtered_contacts(context: dg.AssetExecutionContext, config: SyncRunConfig,
                          integrations: IntegrationsResource, warehouse: WarehouseResource):
        started = time.monotonic()
        integration = integrations.get(context.partition_key)
        rules = integration.exclusions.all_rules()
        imported_needed = sorted(set().union(*(r.imported_fields() for r in rules)))
        contact_needed = sorted(set().union(*(r.contact_fields() for r in rules)))
        with warehouse.get_connection() as con:
            _require_fields(con, integration, s.MAPPED_CONTACTS, set(imported_needed))
            _require_fields(con, integration, MAPPED_CONTACT_FIELDS, set(contact_needed), "mapped_contacts")
            mapped = store.read_for_rules(con, integration.key, contact_needed, imported_needed)
            current = store.contact_ids(con, integration.key)
        result = exclusions.apply_exclusions(mapped, rules)
        guard = integration.deletion_guard
        removal = assess(current, (m["contact_id"] for m in result.kept), guard.max_removed, guard.max_removed_percent)

        def write() -> dict:
            with warehouse.get_connection() as con, transaction(con):
                rows = store.write_contacts_except(con, integration.key, context.run.run_id,
                                                   (c["contact_id"] for c, _ in result.excluded))
                store.write_exclusions(con, integration.key, context.run.run_id, result.excluded)
                pruned = store.prune_list_members(con, integration.key)
                sample = store.sample_rows(con, s.CONTACTS, integration.key, PREVIEW_COLUMNS)
            return {"rows": rows, "excluded": len(result.excluded), "list_members_removed": pruned,
                    "preview": _preview(sample, PREVIEW_COLUMNS),
                    "excluded_by_rule": dg.MetadataValue.json(_counts(rule for _, rule in result.excluded)),
                    "rules": dg.MetadataValue.json([r.name for r in rules])}

        checks = [c.contacts_kept_result(len(mapped), len(result.kept)),
                  c.removal_result(c.CONTACT_REMOVALS_WITHIN_LIMIT, "contacts", removal, config.allow_removals)]
        yield from _checked_write(integration, checks, write, started)

    @dg.asset(
        **common, kinds={"duckdb"}, deps=[filtered_contacts, raw_graph_groups],
        check_specs=c.specs(c.SELECTED_LISTS_RESOLVED, c.NO_LIST_REMOVED, c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT),
        description="Selected directory groups as distribution lists, resolved to contacts: nested groups "
                    "flattened (cycle-safe), only synced contacts as members. Lists change in Entra ID, not "
                    "here. Replaces this integration's lists, members and list errors in one transaction.",
    )
    def distribution_lists(context: dg.AssetExecutionContext, config: SyncRunConfig,
                           integrations: IntegrationsResource, warehouse: WarehouseResource):
        started = time.monotonic()
        integration = integrations.get(context.partition_key)
        selection = integration.distribution_lists
        custom_imported = sorted(set().union(*(d.when.imported_fields() for d in selection.custom)))
        custom_contact = sorted(set().union(*(d.when.contact_fields() for d in selection.custom)))
        with warehouse.get_connection() as con:
            groups, edges = store.read_raw_groups(con, integration.key)
            people = store.people(con, integration.key)
            previous = store.previous_lists(con, integration.key)
            current_members = store.memberships(con, integration.key)
            contacts = []
            if selection.custom:
                _require_fields(con, integration, s.MAPPED_CONTACTS, set(custom_imported))
                _require_fields(con, integration, MAPPED_CONTACT_FIELDS, set(custom_contact), "mapped_contacts")
                contacts = store.read_for_rules(con, integration.key, custom_contact, custom_imported, s.CONTACTS)
        result = lists.resolve_lists(groups, edges, people, selection.select, selection.ids, selection.names)
        custom = lists.custom_lists(contacts, selection.custom)
        all_lists = result.lists + custom.lists
        issues = result.issues + lists.removed_lists(previous, all_lists, groups, result.issues)
        selected = {l["source_group_id"] for l in result.lists}
        available = lists.available_groups(groups, edges, selected)
        guard = integration.deletion_guard
        removal = assess(current_members, result.members + custom.members, guard.max_removed,
                         guard.max_removed_percent)
        checks = [c.issues_result(c.SELECTED_LISTS_RESOLVED, issues), c.issues_result(c.NO_LIST_REMOVED, issues),
                  c.removal_result(c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT, "list memberships", removal,
                                   config.allow_removals)]

        def write() -> dict:
            with warehouse.get_connection() as con, transaction(con):
                n_lists, n_members = store.write_lists(con, integration.key, context.run.run_id, all_lists,
                                                       result.members + custom.members, result.non_members)
                store.write_available_groups(con, integration.key, context.run.run_id, available)
                store.replace_issues(con, integration.key, lists.STAGE, context.run.run_id, issues)
            return {"lists": n_lists, "memberships": n_members, "custom_lists": len(custom.lists),
                    "non_members": len(result.non_members), "available_groups": len(available),
                    "import_errors": len(issues),
                    "lists_by_kind": dg.MetadataValue.json(_counts(l["kind"] for l in all_lists)),
                    "preview": _preview(sorted(all_lists, key=lambda l: -l["member_count"]),
                                        ["display_name", "kind", "member_count", "users_excluded",
                                         "users_without_contact_id", "nested_groups"])}

        yield from _checked_write(integration, checks, write, started)

    return [raw_graph_users, raw_graph_groups, mapped_contacts, filtered_contacts, distribution_lists]
