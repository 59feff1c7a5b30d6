"""Directory groups -> distribution lists of contacts.

Offered as lists: Microsoft 365 groups, mail-enabled security groups and distribution groups.
Plain security groups are never lists, but their members count when they are nested in one.
Membership is transitive (nested groups flattened, cycles visited once) and only contacts that
survived the exclusions are members; everyone else is counted, so an analyst can see why a
person is not on a list.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from entra_pipeline.transform.errors import ImportIssue

STAGE = "distribution_lists"

LIST_NOT_FOUND = "list_not_found"
LIST_NAME_AMBIGUOUS = "list_name_ambiguous"
LIST_NOT_MAIL_ENABLED = "list_not_mail_enabled"

USER = "user"
GROUP = "group"

KIND_M365 = "microsoft365"
KIND_MAIL_SECURITY = "mail_enabled_security"
KIND_DISTRIBUTION = "distribution"
KIND_SECURITY = "security"
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
    issues: list[ImportIssue] = field(default_factory=list)


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
    else:
        by_name: dict[str, list[dict]] = {}
        for group in offered:
            by_name.setdefault((group.get("displayName") or "").strip(), []).append(group)
        for wanted in names:
            matches = by_name.get(wanted.strip(), [])
            if not matches:
                issues.append(ImportIssue(STAGE, wanted, "distribution_lists.names", LIST_NOT_FOUND,
                                          f"no Microsoft 365, mail-enabled security or distribution group "
                                          f"is named {wanted!r}"))
            elif len(matches) > 1:
                ids_text = ", ".join(g["id"] for g in matches)
                issues.append(ImportIssue(STAGE, wanted, "distribution_lists.names", LIST_NAME_AMBIGUOUS,
                                          f"{len(matches)} groups are named {wanted!r} ({ids_text}); "
                                          "select one by id"))
            else:
                chosen[matches[0]["id"]] = matches[0]
    order = {g["id"]: i for i, g in enumerate(groups)}
    return sorted(chosen.values(), key=lambda g: order[g["id"]]), issues


def resolve_lists(
    groups: list[dict],
    edges: dict[str, list[tuple[str, str]]],
    contact_ids_by_user: dict[str, str],
    select: str,
    ids: Iterable[str] = (),
    names: Iterable[str] = (),
) -> ResolvedLists:
    """Resolve the selected groups to lists and members.

    ``edges`` maps a group id to its direct members as (member type, object id), member type being
    ``user``, ``group`` or another Graph type name. ``contact_ids_by_user`` maps a directory user
    id to its contact id, for the users that are contacts after exclusions.
    """
    selected, issues = select_groups(groups, select, ids, names)
    result = ResolvedLists(issues=issues)
    for group in selected:
        users, non_users, nested = _flatten(group["id"], edges)
        contacts = sorted({contact_ids_by_user[u] for u in users if u in contact_ids_by_user})
        not_contacts = sum(1 for u in users if u not in contact_ids_by_user)
        result.lists.append(
            {
                "list_id": group["id"],
                "source_group_id": group["id"],
                "display_name": group.get("displayName"),
                "mail": (group.get("mail") or "").lower() or None,
                "kind": group_kind(group),
                "member_count": len(contacts),
                "users_not_contacts": not_contacts,
                "non_user_members": sum(non_users.values()),
                "non_user_member_types": dict(sorted(non_users.items())),
                "nested_groups": nested,
            }
        )
        result.members.extend((group["id"], contact_id) for contact_id in contacts)
    return result


def _flatten(root: str, edges: dict[str, list[tuple[str, str]]]) -> tuple[set[str], Counter, int]:
    """All users reachable from ``root`` through nested groups, each group visited once."""
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
    return users, Counter(others.values()), len(seen) - 1
