"""Directory groups -> distribution lists of contacts.

Offered as lists: Microsoft 365 groups, mail-enabled security groups and distribution groups.
Plain security groups are never lists, but their members count when they are nested in one.
Membership is transitive (nested groups flattened, cycles visited once) and only contacts that
survived the exclusions are members; everyone else is counted, so an analyst can see why a
person is not on a list.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.exclusions import matches

STAGE = "distribution_lists"

LIST_NOT_FOUND = "list_not_found"
LIST_NAME_AMBIGUOUS = "list_name_ambiguous"
LIST_NOT_MAIL_ENABLED = "list_not_mail_enabled"
LIST_REMOVED = "list_removed"

USER = "user"
GROUP = "group"

KIND_M365 = "microsoft365"
KIND_MAIL_SECURITY = "mail_enabled_security"
KIND_DISTRIBUTION = "distribution"
KIND_SECURITY = "security"
KIND_CUSTOM = "custom"
KIND_GENERATED = "generated"
OFFERED_KINDS = (KIND_M365, KIND_MAIL_SECURITY, KIND_DISTRIBUTION)


def group_kind(group: dict) -> str:
    """Graph's groupTypes/mailEnabled/securityEnabled combination -> kind of group."""
    if "Unified" in (group.get("groupTypes") or []):
        return KIND_M365
    if group.get("mailEnabled"):
        return KIND_MAIL_SECURITY if group.get("securityEnabled") else KIND_DISTRIBUTION
    return KIND_SECURITY


@dataclass
class ResolvedLists:
    lists: list[dict] = field(default_factory=list)
    # (list_id, contact_id)
    members: list[tuple[str, str]] = field(default_factory=list)
    # (list_id, object id, object type, reason)
    non_members: list[tuple[str, str, str, str]] = field(default_factory=list)


def select_groups(groups: list[dict], select: str, ids: Iterable[str], names: Iterable[str]) -> tuple[list[dict], list[ImportIssue]]:
    """The groups chosen by a list selection, in directory order, and what could not be chosen."""
    offered = [g for g in groups if group_kind(g) in OFFERED_KINDS]
    if select == "none":
        return [], []
    if select == "all":
        return offered, []
    issues: list[ImportIssue] = []
    chosen: dict[str, dict] = {}
    if select == "ids":
        by_id = {g["id"]: g for g in groups}
        for wanted in ids:
            group = by_id.get(wanted)
            if group is None:
                issues.append(ImportIssue(STAGE, wanted, "distribution_lists.ids", LIST_NOT_FOUND,
                                          f"selected group id {wanted!r} is not in the directory"))
            elif group_kind(group) not in OFFERED_KINDS:
                issues.append(ImportIssue(STAGE, wanted, "distribution_lists.ids", LIST_NOT_MAIL_ENABLED,
                                          f"group {group.get('displayName')!r} ({wanted}) is a plain security "
                                          "group and cannot be a distribution list"))
            else:
                chosen[wanted] = group
    else:  # names, or the names of a bulk selector file
        source = "distribution_lists.csv" if select == "csv" else "distribution_lists.names"
        by_name: dict[str, list[dict]] = {}
        for group in offered:
            by_name.setdefault((group.get("displayName") or "").strip(), []).append(group)
        for wanted in names:
            matches = by_name.get(wanted.strip(), [])
            if not matches:
                issues.append(ImportIssue(STAGE, wanted, source, LIST_NOT_FOUND,
                                          f"no Microsoft 365, mail-enabled security or distribution group "
                                          f"is named {wanted!r}"))
            elif len(matches) > 1:
                ids_text = ", ".join(g["id"] for g in matches)
                issues.append(ImportIssue(STAGE, wanted, source, LIST_NAME_AMBIGUOUS,
                                          f"{len(matches)} groups are named {wanted!r} ({ids_text}); "
                                          "select one by id"))
            else:
                chosen[matches[0]["id"]] = matches[0]
    order = {g["id"]: i for i, g in enumerate(groups)}
    return sorted(chosen.values(), key=lambda g: order[g["id"]]), issues


@dataclass(frozen=True)
class People:
    """What the earlier stages decided about each directory user, by directory object id."""

    contacts: dict[str, str]  # synced contacts: user id -> contact id
    excluded: dict[str, str]  # excluded by a rule: user id -> rule name
    duplicates: frozenset[str]  # users whose Unique Contact ID another user kept
    read: frozenset[str]  # every user the last directory read returned


#: Why a directory user in a group is not on its list (distribution_list_non_members.reason).
EXCLUDED = "excluded: "  # followed by the rule's name
DUPLICATE_ID = "duplicate Unique Contact ID"
NOT_READ = "not among the users read (added to the group since?)"
NO_CONTACT_ID = "no usable Unique Contact ID"


def why_not_member(user_id: str, people: People) -> str:
    """Why a directory user in a group is not a member of its list."""
    if user_id in people.excluded:
        return f"{EXCLUDED}{people.excluded[user_id]}"
    if user_id in people.duplicates:
        return DUPLICATE_ID
    if user_id not in people.read:
        return NOT_READ
    return NO_CONTACT_ID


NOT_A_USER = "not a user ({})"  # {}: the member's Graph type (device, orgContact, ...)


def not_a_user(kind: str) -> str:
    """Why a member that is not a user is not on a list."""
    return NOT_A_USER.format(kind)


def resolve_groups(selected: list[dict], edges: dict[str, list[tuple[str, str]]], people: People) -> ResolvedLists:
    """The selected groups resolved to lists, members and non-members (the rule an incremental run
    applies; a full run resolves the same inside DuckDB, see warehouse.list_resolution).

    ``edges`` maps a group id to its direct members as (member type, object id), member type being
    ``user``, ``group`` or another Graph type name, and must hold every group reachable from
    ``selected``. Users who are not synced contacts, and members that are not users, are counted
    per list and listed in ``non_members`` with the reason."""
    result = ResolvedLists()
    for group in selected:
        users, others, nested = _flatten(group["id"], edges)
        contacts = sorted({people.contacts[u] for u in users if u in people.contacts})
        reasons = {u: why_not_member(u, people) for u in users if u not in people.contacts}
        non_users = Counter(others.values())
        result.lists.append(
            {
                "list_id": group["id"],
                "source_group_id": group["id"],
                "display_name": group.get("displayName"),
                "mail": (group.get("mail") or "").lower() or None,
                "kind": group_kind(group),
                "member_count": len(contacts),
                "users_not_contacts": len(reasons),
                "users_excluded": sum(1 for r in reasons.values() if r.startswith(EXCLUDED)),
                "users_without_contact_id": sum(1 for r in reasons.values() if not r.startswith(EXCLUDED)),
                "non_user_members": sum(non_users.values()),
                "non_user_member_types": dict(sorted(non_users.items())),
                "nested_groups": nested,
            }
        )
        result.members.extend((group["id"], contact_id) for contact_id in contacts)
        result.non_members.extend((group["id"], u, USER, reason) for u, reason in sorted(reasons.items()))
        result.non_members.extend((group["id"], oid, kind, not_a_user(kind)) for oid, kind in sorted(others.items()))
    return result


def reachable(links: dict[str, set[str]], start: Iterable[str]) -> set[str]:
    """``start`` and every group reachable from it through ``links`` (group id -> groups): with
    parents, every group containing one of them; with children, every group nested in them.
    Cycle-safe."""
    seen = set(start)
    stack = list(seen)
    while stack:
        for linked in links.get(stack.pop(), ()):
            if linked not in seen:
                seen.add(linked)
                stack.append(linked)
    return seen


def custom_lists(contacts: list[dict], definitions: list) -> ResolvedLists:
    """Lists built from contact attributes with the exclusion rule language: every synced contact
    meeting a definition's condition is a member."""
    result = ResolvedLists()
    for definition in definitions:
        members = sorted(c["contact_id"] for c in contacts if matches(definition.when, c))
        list_id = custom_list_id(definition.name)
        result.lists.append({
            "list_id": list_id, "source_group_id": None, "display_name": definition.name, "mail": None,
            "kind": KIND_CUSTOM, "member_count": len(members), "users_not_contacts": 0, "users_excluded": 0,
            "users_without_contact_id": 0, "non_user_members": 0, "non_user_member_types": {}, "nested_groups": 0,
        })
        result.members.extend((list_id, contact_id) for contact_id in members)
    return result


def generated_lists(contacts: list[dict], definitions: list) -> ResolvedLists:
    """One list per distinct non-empty value of each definition's field among the synced
    contacts; its members are the contacts with that value (compared as trimmed text)."""
    result = ResolvedLists()
    for definition in definitions:
        by_value: dict[str, list[str]] = {}
        for contact in contacts:
            value = contact["imported"].get(definition.field) if definition.field else contact.get(definition.contact_field)
            text = value.isoformat() if hasattr(value, "isoformat") else "" if value is None else str(value).strip()
            if text:
                by_value.setdefault(text, []).append(contact["contact_id"])
        for value, members in sorted(by_value.items()):
            list_id = generated_list_id(definition.source, value)
            result.lists.append({
                "list_id": list_id, "source_group_id": None, "display_name": definition.name.replace("{value}", value),
                "mail": None, "kind": KIND_GENERATED, "member_count": len(members), "users_not_contacts": 0,
                "users_excluded": 0, "users_without_contact_id": 0, "non_user_members": 0,
                "non_user_member_types": {}, "nested_groups": 0,
            })
            result.members.extend((list_id, contact_id) for contact_id in sorted(members))
    return result


def generated_list_id(field: str, value: str) -> str:
    """Stable per field and exact value: the readable slug, plus a digest so that "Sales - EMEA"
    and "sales emea" stay two lists."""
    slug = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFKC", value).casefold()).strip("-")
    return f"generated:{field}:{slug}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def custom_list_id(name: str) -> str:
    """A stable id from a custom list's name; letters of any script are kept ("Ärzte", "営業")."""
    slug = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFKC", name).casefold()).strip("-")
    return "custom:" + (slug or hashlib.sha256(name.encode()).hexdigest()[:12])


def removed_lists(previous: dict[str, str], current: list[dict], groups: list[dict],
                  selection_issues: list[ImportIssue] = ()) -> list[ImportIssue]:
    """Lists of the last sync that this sync no longer has (``previous``: list id -> display name),
    each reported with the reason."""
    by_id = {g["id"]: g for g in groups}
    kept = {l["list_id"] for l in current}
    ambiguous = {i.record for i in selection_issues if i.code == LIST_NAME_AMBIGUOUS}
    issues = []
    for list_id, name in sorted(previous.items()):
        if list_id in kept:
            continue
        group = by_id.get(list_id)
        if list_id.startswith("custom:"):
            why = "its definition was removed or renamed in the configuration"
        elif list_id.startswith("generated:"):
            why = "no synced contact has its value any more (or its generated lists were removed from the configuration)"
        elif group is None:
            why = "its group no longer exists in the directory"
        elif group_kind(group) not in OFFERED_KINDS:
            why = "its group is no longer mail-enabled"
        elif (group.get("displayName") or "").strip() in {a.strip() for a in ambiguous}:
            why = "its display name now matches several groups (select it by id)"
        else:
            why = "its group is no longer selected"
        issues.append(ImportIssue(STAGE, list_id, None, LIST_REMOVED, f"list {name!r} ({list_id}) was removed: {why}"))
    return issues


def _flatten(root: str, edges: dict[str, list[tuple[str, str]]]) -> tuple[set[str], dict[str, str], int]:
    """Users, other members (id -> type) and nested groups reachable from ``root``, each group once."""
    users: set[str] = set()
    others: dict[str, str] = {}
    seen = {root}
    stack = [root]
    while stack:
        for member_type, member_id in edges.get(stack.pop(), ()):
            if member_type == USER:
                users.add(member_id)
            elif member_type == GROUP:
                if member_id not in seen:
                    seen.add(member_id)
                    stack.append(member_id)
            else:
                others[member_id] = member_type
    return users, others, len(seen) - 1


def available_groups(groups: list[dict], direct_members: dict[str, int], selected: set[str]) -> list[dict]:
    """Every group that could be a list, for analysts choosing what to select
    (``direct_members``: group id -> how many direct members it has)."""
    offered = [g for g in groups if group_kind(g) in OFFERED_KINDS]
    names = Counter((g.get("displayName") or "").strip() for g in offered)
    return [{"group_id": g["id"], "display_name": g.get("displayName"), "mail": (g.get("mail") or "").lower() or None,
             "kind": group_kind(g), "direct_members": direct_members.get(g["id"], 0), "selected": g["id"] in selected,
             "same_name_groups": names[(g.get("displayName") or "").strip()]} for g in offered]
