"""`explain PERSON [LIST]`: why someone is or is not a contact, and on or off a list, in names.

Read-only, from the warehouse as the last syncs left it (the view people_status, the merged
directory, the list tables and the raw group memberships) and from the integrations file (the
exclusion rules and list conditions are evaluated again on the stored mapped contact, so the answer
names the test that decided and the value it saw)."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

from entra_pipeline.config import Integration, LoadedIntegrations
from entra_pipeline.transform import lists
from entra_pipeline.transform.exclusions import deciding, matches
from entra_pipeline.warehouse import contact_tables
from entra_pipeline.warehouse import schema as s

#: Exit status when the person or the list is not in the warehouse at all.
NOT_FOUND = 1


@dataclass(frozen=True)
class Record:
    """One integration's record of the person (a people_status row)."""

    integration: str
    source_id: str
    name: str | None
    contact_id: str | None
    status: str
    rule: str | None
    problem: str | None


def find(con, person: str) -> list[Record]:
    """Every integration's record of ``person``: an e-mail (the Unique Contact ID, mail or user
    principal name), a directory object id or an employee id."""
    text = person.strip()
    rows = con.execute(f"""
        SELECT integration, source_id, name, contact_id, status, rule, problem FROM "{s.PEOPLE_STATUS}"
        WHERE source_id = ? OR employee_id = ? OR contact_id = lower(?)
           OR (integration, source_id) IN (SELECT (integration, id) FROM "{s.RAW_GRAPH_USERS}"
                                           WHERE lower(user_principal_name) = lower(?) OR lower(mail) = lower(?))
        ORDER BY integration, source_id""", [text, text, text, text, text]).fetchall()
    ids = sorted({row[3] for row in rows if row[3]})
    if ids:  # the same person in the other integrations: by the Unique Contact ID
        rows = sorted(set(rows) | set(con.execute(
            f'SELECT integration, source_id, name, contact_id, status, rule, problem FROM "{s.PEOPLE_STATUS}" '
            "WHERE list_contains(?, contact_id)", [ids]).fetchall()), key=lambda r: (r[0], r[1]))
    return [Record(*row) for row in rows]


def _contact(con, integration: Integration, source_id: str, conditions: list) -> dict | None:
    """The stored mapped contact with what ``conditions`` test."""
    return _stored(con, integration, source_id, set().union(*(c.imported_fields() for c in conditions)),
                   set().union(*(c.contact_fields() for c in conditions)))


def _stored(con, integration: Integration, source_id: str, imported: set[str], fields: set[str]) -> dict | None:
    """The stored mapped contact with these imported and contact fields."""
    found = contact_tables.read_for_rules(con, integration.key, sorted(fields), sorted(imported),
                                          source_ids={source_id})
    return found[0] if found else None


def why_not_a_contact(con, record: Record, integration: Integration | None) -> str:
    """One line: why this integration did not make the person a contact."""
    if record.status == "excluded":
        reason = f"excluded by rule {record.rule!r}"
        if integration is not None:
            rule = next((r for r in integration.exclusions.all_rules() if r.name == record.rule), None)
            contact = _contact(con, integration, record.source_id, [rule]) if rule is not None else None
            if contact is not None and matches(rule, contact):
                reason += ": " + " and ".join(deciding(rule, contact))
        return reason
    if record.status in ("missing_unique_id", "invalid_unique_id", "duplicate_unique_id"):
        return record.problem or record.status
    if record.status == "mapped":
        return "mapped, but filtered_contacts has not run since"
    return "read, but mapped_contacts has not run since"


def person_lines(con, loaded: LoadedIntegrations, records: list[Record]) -> list[str]:
    """The person in the merged directory (each field with its source, or who keeps them out),
    then in each integration that read them."""
    ids = sorted({r.contact_id for r in records if r.contact_id})
    lines = []
    for contact_id in ids:
        cursor = con.execute(f'SELECT * FROM "{s.ALL_CONTACTS}" WHERE contact_id = ?', [contact_id])
        merged = cursor.fetchone()
        if merged is not None:
            row = dict(zip([d[0] for d in cursor.description], merged))
            sources = json.loads(row["sources"])
            lines.append(f"{contact_id}: in the merged directory (all_contacts), from {', '.join(row['integrations'])}")
            lines += [f"  {field}: {_shown(row[field])} (from {source})" for field, source in sources.items()]
            continue
        excluded = con.execute(f'SELECT excluded_by, rule, kept_by FROM "{s.ALL_CONTACTS_EXCLUDED}" '
                               "WHERE contact_id = ? ORDER BY excluded_by", [contact_id]).fetchall()
        if excluded:
            lines += [f"{contact_id}: not in the merged directory: {by} excludes them (rule {rule!r}), although "
                      f"{', '.join(kept)} {'keeps' if len(kept) == 1 else 'keep'} them" for by, rule, kept in excluded]
        else:
            lines.append(f"{contact_id}: not in the merged directory: no integration keeps them")
    for record in records:
        what = f"{record.integration}: {record.name or record.contact_id or record.source_id} ({record.source_id})"
        if record.status == "contact":
            lines.append(f"{what}: a contact")
        else:
            integration = _integration(loaded, record.integration)
            lines.append(f"{what}: not a contact: {why_not_a_contact(con, record, integration)}")
    return lines


def _shown(value) -> str:
    return repr(value.isoformat() if hasattr(value, "isoformat") else value)


def _integration(loaded: LoadedIntegrations, key: str) -> Integration | None:
    return next((i for i in loaded.integrations if i.key == key), None)


def group_path(con, integration: str, group_id: str, user_id: str) -> list[str] | None:
    """The group names from ``group_id`` down to the group the user is a direct member of (nested
    groups followed breadth first, so the shortest path), or None when the user is not in it."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for group, member, kind in con.execute(
            f'SELECT group_id, member_id, member_type FROM "{s.RAW_GRAPH_GROUP_MEMBERS}" WHERE integration = ?',
            [integration]).fetchall():
        edges.setdefault(group, []).append((member, kind))
    names = dict(con.execute(f'SELECT id, display_name FROM "{s.RAW_GRAPH_GROUPS}" WHERE integration = ?',
                             [integration]).fetchall())
    parent: dict[str, str | None] = {group_id: None}
    queue = deque([group_id])
    while queue:
        group = queue.popleft()
        if (user_id, "user") in edges.get(group, []):
            path = []
            while group is not None:
                path.append(names.get(group) or group)
                group = parent[group]
            return path[::-1]
        for member, kind in edges.get(group, []):
            if kind == "group" and member not in parent:
                parent[member] = group
                queue.append(member)
    return None


def list_lines(con, loaded: LoadedIntegrations, records: list[Record], wanted: str) -> tuple[int, list[str]]:
    keys = sorted({r.integration for r in records})
    found = con.execute(f"""
        SELECT integration, list_id, display_name, kind, source_group_id FROM "{s.DISTRIBUTION_LISTS}"
        WHERE (list_id = ? OR lower(display_name) = lower(?)) AND list_contains(?, integration)
        ORDER BY integration, list_id""", [wanted, wanted, keys]).fetchall()
    if not found:
        return NOT_FOUND, not_a_list(con, keys, wanted)
    lines = []
    for (integration, list_id, name, kind, group_id), record in [
            (found_list, r) for found_list in found for r in records if r.integration == found_list[0]]:
        member = con.execute(f'SELECT count(*) FROM "{s.DISTRIBUTION_LIST_MEMBERS}" WHERE integration = ? '
                             "AND list_id = ? AND contact_id = ?", [integration, list_id, record.contact_id]).fetchone()[0]
        several = sum(1 for r in records if r.integration == integration) > 1
        head = f"list {name!r} ({integration}, {kind}): " + (f"{record.name} ({record.source_id}): " if several else "")
        if kind in (lists.KIND_CUSTOM, lists.KIND_GENERATED):
            lines.append(head + _by_condition(con, loaded, record, list_id, name, kind, bool(member)))
            continue
        path = group_path(con, integration, group_id, record.source_id)
        through = " > ".join(repr(g) for g in path) if path else ""
        if member:
            lines.append(head + f"on the list, through {through}")
        elif path is None:
            lines.append(head + f"not on the list: not a member of group {name!r} or of its nested groups")
        else:
            why = why_not_a_contact(con, record, _integration(loaded, integration))
            lines.append(head + f"not on the list: in the group through {through}, but not a contact: {why}")
    return 0, lines


def _by_condition(con, loaded, record: Record, list_id: str, name: str, kind: str, member: bool) -> str:
    integration = _integration(loaded, record.integration)
    if record.status != "contact":
        return "not on the list: not a contact: " + why_not_a_contact(con, record, integration)
    if integration is None:
        return "on the list" if member else "not on the list"
    selection = integration.distribution_lists
    if kind == lists.KIND_CUSTOM:
        definition = next((d for d in selection.custom if lists.custom_list_id(d.name) == list_id), None)
        contact = _contact(con, integration, record.source_id, [definition.when]) if definition else None
        if contact is None:
            return "on the list" if member else "not on the list"
        tests = " and ".join(deciding(definition.when, contact))
        return f"on the list: {tests}" if member else f"not on the list: {tests}"
    definition = next((d for d in selection.generated if list_id.startswith(f"generated:{d.source}:")), None)
    if definition is None:
        return "on the list" if member else "not on the list"
    contact = _stored(con, integration, record.source_id, {definition.field} - {None},
                      {definition.contact_field} - {None}) or {"imported": {}}
    value = contact["imported"].get(definition.field) if definition.field else contact.get(definition.contact_field)
    return (f"on the list: its {definition.source} is {_shown(value)}" if member else
            f"not on the list: its {definition.source} is {_shown(value)}; the list {name!r} is for another value")


def not_a_list(con, keys: list[str], wanted: str) -> list[str]:
    """Why no list of ``keys`` is called ``wanted``: an offered group not selected, a name the bulk
    selector file matches more than once, or no such group."""
    lines = []
    for integration, name, selected in con.execute(
            f'SELECT integration, any_value(display_name), bool_or(selected) FROM "{s.AVAILABLE_GROUPS}" '
            "WHERE (group_id = ? OR lower(display_name) = lower(?)) AND list_contains(?, integration) "
            "GROUP BY integration ORDER BY integration", [wanted, wanted, keys]).fetchall():
        ambiguous = con.execute(f'SELECT message FROM "{s.IMPORT_ERRORS}" WHERE integration = ? AND code = ? '
                                "AND lower(trim(record)) = lower(trim(?))",
                                [integration, lists.LIST_NAME_AMBIGUOUS, wanted]).fetchall()
        if ambiguous:
            lines.append(f"{integration}: no list {wanted!r}: {ambiguous[0][0]}")
        elif not selected:
            lines.append(f"{integration}: no list {wanted!r}: group {name!r} is offered but not selected "
                         "(distribution_lists.select)")
    return lines or [f"no list or group {wanted!r} in {', '.join(keys)}"]


def explain(con, loaded: LoadedIntegrations, person: str, wanted: str | None = None) -> tuple[int, list[str]]:
    """(exit status, the lines to print)."""
    records = find(con, person)
    if not records:
        return NOT_FOUND, [f"no one called {person!r} in the warehouse: no integration read them (outside "
                           "the tenant or the report, or not synced yet)"]
    lines = person_lines(con, loaded, records)
    if wanted is None:
        return 0, lines
    status, more = list_lines(con, loaded, records, wanted)
    return status, lines + more
