"""The directory the emulator serves: users, groups, direct memberships and other member
objects, indexed by id and userPrincipalName, with the operations the change API needs (see
the emulator README for what a generated one holds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, Iterator

from .model import GROUP_TYPE, USER_TYPE


class _Positions:
    """Where each element of a list sits, by key; cheap to keep under appends and removals.

    Exact right after :meth:`rebuild`. A removal shifts later elements one to
    the left, so a recorded position overshoots the real one by at most the
    removals since the rebuild: :meth:`remove` looks in that window only and
    rebuilds once the window outgrows ``sqrt(len)``. A list changed behind the
    index's back (other length, or the element not in its window) is rebuilt.
    """

    __slots__ = ("items", "key", "pos", "removed", "length")

    def __init__(self, items: list, key: Callable) -> None:
        self.items, self.key = items, key
        self.rebuild()

    def rebuild(self) -> None:
        key = self.key
        self.pos = {key(item): i for i, item in enumerate(self.items)}
        self.removed = 0
        self.length = len(self.items)

    def current(self, items: list | None) -> bool:
        return items is self.items and len(items) == self.length

    def __contains__(self, k) -> bool:
        return k in self.pos

    def append(self, item) -> None:
        self.pos[self.key(item)] = len(self.items)
        self.items.append(item)
        self.length += 1

    def remove(self, k):
        """Remove and return the element whose key is ``k`` (None if there is none)."""
        p = self.pos.get(k)
        if p is None:
            return None
        items, key = self.items, self.key
        for i in range(min(p, len(items) - 1), max(0, p - self.removed) - 1, -1):
            if key(items[i]) == k:
                break
        else:
            self.rebuild()
            i = self.pos.get(k)
            if i is None:
                return None
        item = items.pop(i)
        del self.pos[k]
        self.removed += 1
        self.length -= 1
        if self.removed > 32 and self.removed * self.removed > self.length:
            self.rebuild()
        return item


_id_of = itemgetter("id")
_member_id = itemgetter(1)


@dataclass
class Directory:
    """An in-memory tenant: users, groups, direct memberships and other member objects."""

    users: list[dict]
    groups: list[dict]
    members: dict[str, list[tuple[str, str]]]
    other_objects: dict[str, dict]
    extension_app_id: str
    extension_property: str
    special: dict = field(default_factory=dict)
    #: ``user id -> manager object id`` (a user or an orgContact); users without a manager are absent.
    manager_of: dict[str, str] = field(default_factory=dict)

    _users_by_id: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _users_by_upn: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _groups_by_id: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    # Built on first use by the mutation methods below; reindex() drops them.
    _user_positions: _Positions | None = field(init=False, repr=False, compare=False, default=None)
    _group_positions: _Positions | None = field(init=False, repr=False, compare=False, default=None)
    _member_positions: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _groups_of: dict | None = field(init=False, repr=False, compare=False, default=None)
    _reports_of: dict | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the lookup tables after users/groups were changed in place."""
        self._users_by_id = {u["id"]: u for u in self.users}
        self._users_by_upn = {
            u["userPrincipalName"].lower(): u for u in self.users if u.get("userPrincipalName")
        }
        self._groups_by_id = {g["id"]: g for g in self.groups}
        self._user_positions = self._group_positions = None
        self._member_positions = {}
        self._groups_of = self._reports_of = None

    def user_by_id(self, object_id: str) -> dict | None:
        return self._users_by_id.get(object_id)

    def user_by_upn(self, upn: str) -> dict | None:
        """Case-insensitive lookup by userPrincipalName (Graph accepts ``/users/{upn}``)."""
        return self._users_by_upn.get(upn.lower())

    def group_by_id(self, object_id: str) -> dict | None:
        return self._groups_by_id.get(object_id)

    def object_by_id(self, object_id: str) -> tuple[str, dict] | None:
        """``(odata_type, object)`` for any user, group or other directory object."""
        user = self._users_by_id.get(object_id)
        if user is not None:
            return USER_TYPE, user
        group = self._groups_by_id.get(object_id)
        if group is not None:
            return GROUP_TYPE, group
        other = self.other_objects.get(object_id)
        if other is not None:
            return other["@odata.type"], other
        return None

    def manager(self, user_id: str) -> tuple[str, dict] | None:
        """``(odata_type, object)`` of the user's manager, or None (no manager, or it was deleted)."""
        manager_id = self.manager_of.get(user_id)
        return None if manager_id is None else self.object_by_id(manager_id)

    def transitive_members(self, group_id: str) -> list[tuple[str, str]]:
        """Flattened membership as Graph's ``transitiveMembers`` lists it.

        Depth-first in direct-member order; nested groups appear themselves and
        are expanded once, so cycles terminate. Each object appears once and the
        group itself is never listed, even when a cycle leads back to it.
        Raises ``KeyError`` for an unknown group.
        """
        if group_id not in self._groups_by_id:
            raise KeyError(group_id)
        out: list[tuple[str, str]] = []
        seen = {group_id}
        expanded = {group_id}
        stack: list[Iterator[tuple[str, str]]] = [iter(self.members.get(group_id, ()))]
        while stack:
            for odata_type, object_id in stack[-1]:
                if object_id not in seen:
                    seen.add(object_id)
                    out.append((odata_type, object_id))
                if odata_type == GROUP_TYPE and object_id not in expanded:
                    expanded.add(object_id)
                    stack.append(iter(self.members.get(object_id, ())))
                    break
            else:
                stack.pop()
        return out

    # -- index-preserving mutations (no change log: see the server's change API) ----------

    def _users_index(self) -> _Positions:
        if self._user_positions is None or not self._user_positions.current(self.users):
            self._user_positions = _Positions(self.users, _id_of)
        return self._user_positions

    def _groups_index(self) -> _Positions:
        if self._group_positions is None or not self._group_positions.current(self.groups):
            self._group_positions = _Positions(self.groups, _id_of)
        return self._group_positions

    def _members_index(self, group_id: str) -> _Positions:
        members = self.members.get(group_id)
        if members is None:
            members = self.members[group_id] = []
        index = self._member_positions.get(group_id)
        if index is None or not index.current(members):
            index = self._member_positions[group_id] = _Positions(members, _member_id)
        return index

    def _membership(self) -> dict[str, dict[str, None]]:
        """``member id -> {group id: None}`` (an ordered set) over the direct members of groups."""
        if self._groups_of is None:
            groups_of: dict[str, dict[str, None]] = {}
            for group_id, members in self.members.items():
                if group_id in self._groups_by_id:
                    for _, member_id in members:
                        groups_of.setdefault(member_id, {})[group_id] = None
            self._groups_of = groups_of
        return self._groups_of

    def _reports(self) -> dict[str, dict[str, None]]:
        if self._reports_of is None:
            reports: dict[str, dict[str, None]] = {}
            for user_id, manager_id in self.manager_of.items():
                reports.setdefault(manager_id, {})[user_id] = None
            self._reports_of = reports
        return self._reports_of

    def groups_of(self, member_id: str) -> list[str]:
        """Ids of the groups ``member_id`` is a direct member of."""
        return list(self._membership().get(member_id, ()))

    def direct_reports(self, manager_id: str) -> list[str]:
        """Ids of the users whose manager is ``manager_id``."""
        return list(self._reports().get(manager_id, ()))

    def has_member(self, group_id: str, member_id: str) -> bool:
        return group_id in self._groups_by_id and member_id in self._members_index(group_id)

    def add_user(self, user: dict) -> None:
        """Append a user (the caller checked that its id and UPN are free)."""
        self._users_index().append(user)
        self._users_by_id[user["id"]] = user
        if user.get("userPrincipalName"):
            self._users_by_upn[user["userPrincipalName"].lower()] = user

    def update_user(self, user_id: str, values: dict) -> dict:
        """Set top-level properties in place; returns ``{name: old value}`` of those that changed."""
        user = self._users_by_id[user_id]
        old_upn = user.get("userPrincipalName")
        changed = _assign(user, values)
        if "userPrincipalName" in changed:
            if old_upn and self._users_by_upn.get(old_upn.lower()) is user:
                del self._users_by_upn[old_upn.lower()]
            if user.get("userPrincipalName"):
                self._users_by_upn[user["userPrincipalName"].lower()] = user
        return changed

    def remove_user(self, user_id: str) -> tuple[dict, list[str], str | None, list[str]]:
        """Remove a user and every link to it: ``(user, group ids, manager id, report ids)``.

        The user leaves every group it was a direct member of, its own manager
        link is dropped and its direct reports lose their manager.
        """
        user = self._users_by_id.pop(user_id)
        self._users_index().remove(user_id)
        upn = user.get("userPrincipalName")
        if upn and self._users_by_upn.get(upn.lower()) is user:
            del self._users_by_upn[upn.lower()]
        groups = self.groups_of(user_id)
        for group_id in groups:
            self.remove_member(group_id, user_id)
        manager = self.set_manager(user_id, None)
        reports = self.direct_reports(user_id)
        for report in reports:
            self.set_manager(report, None)
        return user, groups, manager, reports

    def set_manager(self, user_id: str, manager_id: str | None) -> str | None:
        """Set (or with None remove) a user's manager link; returns the previous manager id."""
        reports = self._reports()
        old = self.manager_of.pop(user_id, None)
        if old is not None:
            mine = reports.get(old)
            if mine is not None:
                mine.pop(user_id, None)
                if not mine:
                    del reports[old]
        if manager_id is not None:
            self.manager_of[user_id] = manager_id
            reports.setdefault(manager_id, {})[user_id] = None
        return old

    def add_group(self, group: dict) -> None:
        """Append a group with no members (the caller checked that its id is free)."""
        self._groups_index().append(group)
        self._groups_by_id[group["id"]] = group
        self.members[group["id"]] = []
        self._member_positions.pop(group["id"], None)

    def update_group(self, group_id: str, values: dict) -> dict:
        """Set top-level properties in place; returns ``{name: old value}`` of those that changed."""
        return _assign(self._groups_by_id[group_id], values)

    def remove_group(self, group_id: str) -> tuple[dict, list[tuple[str, str]], list[str]]:
        """Remove a group: ``(group, its direct members, ids of the groups it was a member of)``."""
        group = self._groups_by_id[group_id]
        parents = self.groups_of(group_id)
        for parent in parents:
            self.remove_member(parent, group_id)
        membership = self._membership()
        members = self.members.pop(group_id, [])
        self._member_positions.pop(group_id, None)
        for _, member_id in members:
            groups = membership.get(member_id)
            if groups is not None:
                groups.pop(group_id, None)
                if not groups:
                    del membership[member_id]
        del self._groups_by_id[group_id]
        self._groups_index().remove(group_id)
        return group, members, parents

    def add_member(self, group_id: str, odata_type: str, member_id: str) -> bool:
        """Add a direct member at the end of the group's list; False if it already was one."""
        index = self._members_index(group_id)
        if member_id in index:
            return False
        index.append((odata_type, member_id))
        self._membership().setdefault(member_id, {})[group_id] = None
        return True

    def remove_member(self, group_id: str, member_id: str) -> str | None:
        """Remove a direct member; its ``@odata.type``, or None if it was not a member."""
        removed = self._members_index(group_id).remove(member_id)
        if removed is None:
            return None
        membership = self._membership()
        groups = membership.get(member_id)
        if groups is not None:
            groups.pop(group_id, None)
            if not groups:
                del membership[member_id]
        return removed[0]


def _assign(obj: dict, values: dict) -> dict:
    changed = {}
    for name, value in values.items():
        old = obj.get(name)
        if name not in obj or old != value:
            changed[name] = old
        obj[name] = value
    return changed
