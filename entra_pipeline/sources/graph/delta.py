"""Applying a delta round's items to what was stored before (no HTTP, no warehouse).

Graph's delta items are patches: an updated object carries its id and the changed properties
only, ``@removed`` marks a removed object, ``members@delta`` / ``manager@delta`` list links added
or removed, and an object may appear several times in one round (a large group's members come in
slices on several pages; replays are normal). Applying the items in page order to the stored
objects gives the current objects; applying the same items twice gives the same result.
"""

from __future__ import annotations

from typing import Iterable

from entra_pipeline.sources.graph.pages import member_type

MEMBERS_DELTA = "members@delta"
MANAGER_DELTA = "manager@delta"
REMOVED = "@removed"


def properties(item: dict) -> dict:
    """A delta item's properties: without annotations (``@removed``, ``members@delta``, ...)."""
    return {key: value for key, value in item.items() if "@" not in key}


def _patch(target: dict, item: dict) -> None:
    target.update(properties(item))


def apply_users(stored: dict[str, dict], items: Iterable[dict]) -> dict[str, dict | None]:
    """The users ``items`` touch, as they are now (None: removed, soft- or hard-deleted).

    ``stored`` holds the previously stored JSON of (at least) those users. The manager arrives as
    ``manager@delta`` and is kept as ``{"manager": {"id": ...}}``, the shape ``$expand=manager``
    gives, so the mapping reads it the same way whichever read filled it."""
    out: dict[str, dict | None] = {}
    for item in items:
        uid = item["id"]
        if REMOVED in item:
            out[uid] = None
            continue
        current = out[uid] if uid in out else stored.get(uid)
        user = dict(current) if current is not None else {}
        _patch(user, item)
        for link in item.get(MANAGER_DELTA) or ():
            if REMOVED not in link:
                user["manager"] = {"id": link["id"]}
            elif (user.get("manager") or {}).get("id") == link["id"]:
                user.pop("manager", None)
        out[uid] = user
    return out


def apply_groups(stored: dict[str, dict], items: Iterable[dict]
                 ) -> tuple[dict[str, dict | None], dict[str, dict[str, str | None]]]:
    """The groups ``items`` touch as they are now (None: removed), and the round's net membership
    changes per group: member id -> member type (``user``, ``group``, ...) when added, None when
    removed (the last mention of a member wins).

    ``stored`` holds (at least) those groups as stored before. A group split over several pages
    arrives as several items: their ``members@delta`` slices are merged. In a full round every
    member is an addition."""
    groups: dict[str, dict | None] = {}
    members: dict[str, dict[str, str | None]] = {}
    for item in items:
        gid = item["id"]
        if REMOVED in item:
            groups[gid] = None
            members[gid] = {}
            continue
        current = groups[gid] if gid in groups else stored.get(gid)
        group = dict(current) if current is not None else {}
        _patch(group, item)
        groups[gid] = group
        ops = members.setdefault(gid, {})
        for link in item.get(MEMBERS_DELTA) or ():
            ops[link["id"]] = None if REMOVED in link else member_type(link)
    return groups, members
