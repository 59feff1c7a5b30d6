"""A small directory of groups for the list rules: nesting, a cycle (g2 -> g3 -> g4 -> g2),
members that are not users, and users who are not contacts for each reason there is."""

from __future__ import annotations

from entra_pipeline.transform import lists


def group(gid: str, name: str, kind: str) -> dict:
    shapes = {
        "m365": (["Unified"], True, False),
        "mailsec": ([], True, True),
        "dist": ([], True, False),
        "sec": ([], False, True),
    }
    types, mail_enabled, security = shapes[kind]
    return {"id": gid, "displayName": name, "mail": f"{gid}@T.example" if mail_enabled else None,
            "groupTypes": types, "mailEnabled": mail_enabled, "securityEnabled": security}


GROUPS = [group("g1", "Sales", "m365"), group("g2", "Ops", "dist"), group("g3", "Inner", "sec"),
          group("g4", "Loop", "mailsec"), group("g5", "Sales", "dist"), group("g6", "Empty", "m365")]
EDGES = {
    "g1": [("user", "u1"), ("user", "u2")],
    "g2": [("group", "g3"), ("user", "u3"), ("orgContact", "oc1")],
    "g3": [("user", "u4"), ("group", "g4"), ("device", "d1")],
    "g4": [("group", "g2"), ("user", "u5"), ("user", "u9"), ("user", "u8"), ("user", "u7"), ("user", "u6")],
    # g2 -> g3 -> g4 -> g2: a cycle
    "g5": [],
    "g6": [],
}
# u8 is excluded by a rule, u9 has no usable Unique Contact ID, u7 lost a duplicate ID to another user,
# u6 joined the group after the users were read.
CONTACTS = lists.People(contacts={"u1": "a@x", "u2": "b@x", "u3": "c@x", "u4": "d@x", "u5": "e@x"},
                        excluded={"u8": "On leave"}, duplicates=frozenset({"u7"}),
                        read=frozenset({"u1", "u2", "u3", "u4", "u5", "u7", "u8", "u9"}))


def resolve(select: str, ids=(), names=()) -> tuple[lists.ResolvedLists, list]:
    """The fixture's groups chosen by a list selection and resolved by the rule: (the lists, the
    selection's issues)."""
    selected, issues = lists.select_groups(GROUPS, select, ids, names)
    return lists.resolve_groups(selected, EDGES, CONTACTS), issues
