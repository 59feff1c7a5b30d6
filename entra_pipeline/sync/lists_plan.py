"""What distribution_lists will write: every list resolved from every group and contact, or only
the lists and people that changed since the last lists write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from entra_pipeline.config import Integration
from entra_pipeline.transform import guard, lists
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse import contact_tables, list_resolution, list_tables, raw_tables, table_rows


@dataclass
class ListPlan:
    """What distribution_lists will write: the memberships stored before (``size``, the whole),
    how many it adds and removes (``sample``: the first removed), and the write itself."""

    mode: str
    selected: set[str]
    list_ids: set[str]
    selection_issues: list[ImportIssue]
    size: int
    added: int
    removed: int
    sample: list
    write: Callable
    rebuilt: int
    users: int


def all_lists(con, integration: Integration, run_id: str, groups: list[dict], custom_contact: list[str],
              custom_imported: list[str]) -> ListPlan:
    """Every list resolved from every group and contact (first run, changed configuration, a
    full read, or too many changes): the groups' lists inside DuckDB (list_resolution)."""
    selection = integration.distribution_lists
    selected, issues = lists.select_groups(groups, selection.select, selection.ids, selection.names)
    rows = list_resolution.resolve(con, integration.key, selected)
    contacts = (contact_tables.read_for_rules(con, integration.key, custom_contact, custom_imported, s.CONTACTS)
                if selection.custom or selection.generated else [])
    custom = lists.custom_lists(contacts, selection.custom)
    generated = lists.generated_lists(contacts, selection.generated)
    rows += custom.lists + generated.lists
    list_resolution.add_members(con, custom.members + generated.members)
    size, added, removed, sample = list_resolution.compare(con, integration.key, guard.SAMPLE)
    users = table_rows.count_rows(con, s.RAW_PEOPLE[integration.kind], integration.key)

    def write(con) -> None:
        list_resolution.write(con, integration.key, run_id, rows, custom.non_members + generated.non_members)

    return ListPlan("full", {g["id"] for g in selected}, {l["list_id"] for l in rows}, issues, size, added, removed,
                    sample, write, len(rows), users)


def changed_lists(con, integration: Integration, run_id: str, groups: list[dict], previous: dict[str, str],
                  changed: set[str], custom_contact: list[str], custom_imported: list[str]) -> ListPlan:
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

    stored = table_rows.count_rows(con, s.DISTRIBUTION_LIST_MEMBERS, integration.key)
    gone = sorted(current - members, key=str)
    return ListPlan("incremental", selected, selected | custom_ids, selection_issues, stored, len(members - current),
                    len(gone), gone[:guard.SAMPLE], write, len(rebuilt.lists), len(users))
