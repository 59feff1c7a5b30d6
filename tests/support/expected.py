"""Expected outcomes, computed from the emulator's directory independently of the pipeline's code."""

from __future__ import annotations


def expected_mapped(directory) -> dict[str, str]:
    """user id -> contact id for users with a mail address (the default Unique Contact ID)."""
    return {u["id"]: u["mail"].strip().lower() for u in directory.users if u["mail"]}


def expected_contacts(directory) -> dict[str, str]:
    """The default test exclusions applied: disabled, guests, extensionAttribute1 exactly 'Inactive'."""
    kept = {}
    for user in directory.users:
        ext1 = (user["onPremisesExtensionAttributes"] or {}).get("extensionAttribute1")
        if user["mail"] and user["accountEnabled"] and user["userType"] != "Guest" and ext1 != "Inactive":
            kept[user["id"]] = user["mail"].strip().lower()
    return kept


def excluded_by_rule(directory, *, guests_rule: bool = True) -> dict[str, str]:
    """user id -> first matching default exclusion rule, for the users with a mail address."""
    excluded = {}
    for user in directory.users:
        if not user["mail"]:
            continue
        ext1 = user["onPremisesExtensionAttributes"]["extensionAttribute1"]
        if user["accountEnabled"] is False:
            excluded[user["id"]] = "Disabled account"
        elif guests_rule and user["userType"] == "Guest":
            excluded[user["id"]] = "Guest"
        elif ext1 == "Inactive":
            excluded[user["id"]] = "On leave"
    return excluded


def offered_group_ids(directory) -> set[str]:
    return {g["id"] for g in directory.groups if g["mailEnabled"]}


def expected_members(directory, group_id: str, contacts: dict[str, str]) -> set[str]:
    """Contacts among the group's transitive members, as Graph's transitiveMembers computes them."""
    return {contacts[oid] for otype, oid in directory.transitive_members(group_id)
            if otype == "#microsoft.graph.user" and oid in contacts}
