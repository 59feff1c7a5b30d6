"""The change log behind delta queries: :class:`ChangeTracker` owns one directory and is the
only code that changes it on behalf of the emulator's change API (``Emulator.add_user`` ...).
Every change bumps one global, monotonically increasing ``version`` and appends what changed to
a per-resource log; soft-deleted users and groups wait in its recycle bin with the links they
had (see the emulator README)."""

from __future__ import annotations

import bisect
import copy
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from .directory import Directory
from .model import CONTACT_TYPE, GROUP_TYPE, USER_PROPERTIES, USER_TYPE
from .odata import EntitySchema, group_schema, user_schema

__all__ = ["ChangeTracker", "USERS", "GROUPS"]


USERS, GROUPS = "users", "groups"
_EXT_ATTRS = tuple(f"extensionAttribute{i}" for i in range(1, 16))
_EXT_ATTR_NAMES = {name.lower(): name for name in _EXT_ATTRS}
_LIST_USER_PROPS = ("otherMails", "proxyAddresses", "businessPhones")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MANAGER_TYPES = (USER_TYPE, CONTACT_TYPE)


class _Log:
    """Entries ``(object id, event, data)`` in version order; ``since(V)`` by bisection."""

    def __init__(self) -> None:
        self.versions: list[int] = []
        self.entries: list[tuple[str, str, object]] = []

    def add(self, version: int, entry: tuple[str, str, object]) -> None:
        self.versions.append(version)
        self.entries.append(entry)

    def since(self, version: int) -> list[tuple[str, str, object]]:
        return self.entries[bisect.bisect_right(self.versions, version):]

    def clear(self) -> None:
        self.versions.clear()
        self.entries.clear()


@dataclass
class _DeletedUser:
    user: dict
    groups: list[str]
    manager: str | None
    reports: list[str]


@dataclass
class _DeletedGroup:
    group: dict
    members: list[tuple[str, str]]
    parents: list[str]


class ChangeTracker:
    """Change API, change log and recycle bin for one directory (see the emulator README).

    Not thread-safe by itself: the server calls it under one lock. Methods
    raise ``KeyError`` for unknown (or not active) ids and ``ValueError`` for
    invalid changes, before changing anything.
    """

    def __init__(self, directory: Directory, version: int = 0) -> None:
        self.directory = directory
        self.version = version
        self.logs = {USERS: _Log(), GROUPS: _Log()}
        self.deleted_users: dict[str, _DeletedUser] = {}
        self.deleted_groups: dict[str, _DeletedGroup] = {}

    # -- bookkeeping ----------------------------------------------------------

    def _commit(self, entries: list[tuple[str, str, str, object]]) -> None:
        if not entries:
            return
        self.version += 1
        for resource, object_id, event, data in entries:
            self.logs[resource].add(self.version, (object_id, event, data))

    def clear_log(self) -> None:
        """Forget the log (every token that could need it was invalidated)."""
        for log in self.logs.values():
            log.clear()

    def _user(self, user_id: str) -> dict:
        user = self.directory.user_by_id(user_id)
        if user is None:
            where = " (it is soft-deleted: restore_user first)" if user_id in self.deleted_users else ""
            raise KeyError(f"no active user with id {user_id!r}{where}")
        return user

    def _group(self, group_id: str) -> dict:
        group = self.directory.group_by_id(group_id)
        if group is None:
            where = " (it is soft-deleted)" if group_id in self.deleted_groups else ""
            raise KeyError(f"no active group with id {group_id!r}{where}")
        return group

    def _object_type(self, object_id: str) -> str:
        found = self.directory.object_by_id(object_id)
        if found is None:
            raise KeyError(f"no active user, group or other directory object with id {object_id!r}")
        return found[0]

    def _new_id(self, object_id, what: str) -> str:
        if not isinstance(object_id, str) or not _GUID_RE.match(object_id):
            raise ValueError(f"{what} needs an 'id' that is a GUID string, got {object_id!r}")
        if (self.directory.object_by_id(object_id) is not None or object_id in self.deleted_users
                or object_id in self.deleted_groups):
            raise ValueError(f"id {object_id!r} is already used by a directory object")
        return object_id

    def _check_upn(self, upn, user_id: str) -> None:
        if not isinstance(upn, str) or not upn.strip():
            raise ValueError("userPrincipalName must be a non-empty string")
        other = self.directory.user_by_upn(upn)
        if other is not None and other["id"] != user_id:
            raise ValueError(f"userPrincipalName {upn!r} is already used by user {other['id']!r}")

    def _properties(self, schema: EntitySchema, changes: dict, current: dict | None) -> dict:
        """Canonical property names and deep-copied values; ``onPremisesExtensionAttributes`` merged."""
        if not isinstance(changes, dict):
            raise ValueError("changes must be a dict of top-level Graph properties")
        values: dict = {}
        for name, value in changes.items():
            if not isinstance(name, str):
                raise ValueError(f"property names must be strings, got {name!r}")
            if name.lower() in schema.navigation or name.lower() == "members":
                helper = "set_manager" if name.lower() == "manager" else "add_member/remove_member"
                raise ValueError(f"'{name}' is a navigation property: use {helper}")
            prop = schema.prop(name)
            if prop is None:
                raise ValueError(f"no property named {name!r} on {schema.type_name}")
            if prop.name == "id":
                raise ValueError("'id' cannot be changed")
            if prop.name == "onPremisesExtensionAttributes":
                base = dict.fromkeys(_EXT_ATTRS)
                if value is not None:
                    if not isinstance(value, dict):
                        raise ValueError("onPremisesExtensionAttributes must be a dict (merged) or None "
                                         "(clears all 15)")
                    if current is not None:
                        base.update(current.get(prop.name) or {})
                    for key, attr in value.items():
                        canonical = _EXT_ATTR_NAMES.get(str(key).lower())
                        if canonical is None:
                            raise ValueError(f"no attribute named {key!r} in onPremisesExtensionAttributes "
                                             "(extensionAttribute1..15)")
                        base[canonical] = attr
                value = base  # a new object: rounds already computed keep the old one
            values[prop.name] = copy.deepcopy(value)
        return values

    # -- users ------------------------------------------------------------------

    def add_user(self, user: dict) -> dict:
        if not isinstance(user, dict):
            raise ValueError("user must be a dict")
        user_id = self._new_id(user.get("id"), "add_user")
        d = self.directory
        schema = user_schema(d.extension_property)
        values = self._properties(schema, {k: v for k, v in user.items() if k != "id"}, None)
        self._check_upn(values.get("userPrincipalName"), user_id)
        new = {"id": user_id}
        for name in USER_PROPERTIES[1:]:
            new[name] = [] if name in _LIST_USER_PROPS else None
        new.update(accountEnabled=True, userType="Member",
                   onPremisesExtensionAttributes=dict.fromkeys(_EXT_ATTRS))
        new[d.extension_property] = None
        new.update(values)
        d.add_user(new)
        self._commit([(USERS, user_id, "created", None)])
        return copy.deepcopy(new)

    def update_user(self, user_id: str, changes: dict) -> dict:
        user = self._user(user_id)
        values = self._properties(user_schema(self.directory.extension_property), changes, user)
        if "userPrincipalName" in values:
            self._check_upn(values["userPrincipalName"], user_id)
        old = self.directory.update_user(user_id, values)
        if old:
            self._commit([(USERS, user_id, "updated", old)])
        return copy.deepcopy(user)

    def set_manager(self, user_id: str, manager_id: str | None) -> None:
        self._user(user_id)
        if manager_id is not None:
            odata_type = self._object_type(manager_id)
            if odata_type not in _MANAGER_TYPES:
                raise ValueError(f"a manager must be a user or an orgContact, {manager_id!r} is {odata_type}")
            if manager_id == user_id:
                raise ValueError("a user cannot be its own manager")
        d = self.directory
        current = d.manager_of.get(user_id)
        if current == manager_id:
            return
        old_type = self._type_or_user(current)
        d.set_manager(user_id, manager_id)
        self._commit([(USERS, user_id, "manager", (current, old_type))])

    def _type_or_user(self, object_id: str | None) -> str:
        if object_id is None:
            return USER_TYPE
        found = self.directory.object_by_id(object_id)
        return found[0] if found is not None else USER_TYPE

    def _unlink_user(self, user_id: str, event: str) -> tuple[dict, list[str], str | None, list[str]]:
        user, groups, manager, reports = self.directory.remove_user(user_id)
        entries = [(GROUPS, group_id, "member_removed", (user_id, USER_TYPE)) for group_id in groups]
        entries += [(USERS, report, "manager", (user_id, USER_TYPE)) for report in reports]
        entries.append((USERS, user_id, event, None))
        self._commit(entries)
        return user, groups, manager, reports

    def soft_delete_user(self, user_id: str) -> None:
        self._user(user_id)
        user, groups, manager, reports = self._unlink_user(user_id, "soft_deleted")
        self.deleted_users[user_id] = _DeletedUser(user, groups, manager, reports)

    def hard_delete_user(self, user_id: str) -> None:
        if user_id in self.deleted_users:
            del self.deleted_users[user_id]
            self._commit([(USERS, user_id, "hard_deleted", None)])
            return
        self._user(user_id)
        self._unlink_user(user_id, "hard_deleted")

    def restore_user(self, user_id: str) -> dict:
        saved = self.deleted_users.get(user_id)
        if saved is None:
            raise KeyError(f"no soft-deleted user with id {user_id!r}")
        d = self.directory
        upn = saved.user.get("userPrincipalName")
        if upn:
            self._check_upn(upn, user_id)
        del self.deleted_users[user_id]
        d.add_user(saved.user)
        entries = [(USERS, user_id, "restored", None)]
        if saved.manager is not None and d.object_by_id(saved.manager) is not None:
            d.set_manager(user_id, saved.manager)
        for group_id in saved.groups:
            if d.group_by_id(group_id) is not None and d.add_member(group_id, USER_TYPE, user_id):
                entries.append((GROUPS, group_id, "member_added", (user_id, USER_TYPE)))
        for report in saved.reports:
            if d.user_by_id(report) is not None and report not in d.manager_of:
                d.set_manager(report, user_id)
                entries.append((USERS, report, "manager", (None, USER_TYPE)))
        self._commit(entries)
        return copy.deepcopy(saved.user)

    # -- groups -------------------------------------------------------------------

    def add_group(self, group: dict, members=()) -> dict:
        if not isinstance(group, dict):
            raise ValueError("group must be a dict")
        group_id = self._new_id(group.get("id"), "add_group")
        values = self._properties(group_schema(), {k: v for k, v in group.items() if k != "id"}, None)
        if not isinstance(values.get("displayName"), str) or not values["displayName"].strip():
            raise ValueError("add_group needs a non-empty 'displayName'")
        if isinstance(members, str):
            raise ValueError("members must be a list of object ids, not a string")
        resolved: dict[str, str] = {}
        for member_id in members:
            if member_id == group_id:
                raise ValueError("a group cannot be a member of itself")
            resolved.setdefault(member_id, self._object_type(member_id))
        new = {
            "id": group_id, "displayName": None, "description": None, "mail": None, "mailNickname": None,
            "mailEnabled": False, "securityEnabled": True, "groupTypes": [],
            "createdDateTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "visibility": None,
        }
        new.update(values)
        d = self.directory
        d.add_group(new)
        for member_id, odata_type in resolved.items():
            d.add_member(group_id, odata_type, member_id)
        self._commit([(GROUPS, group_id, "created", None)])
        return copy.deepcopy(new)

    def update_group(self, group_id: str, changes: dict) -> dict:
        group = self._group(group_id)
        values = self._properties(group_schema(), changes, group)
        old = self.directory.update_group(group_id, values)
        if old:
            self._commit([(GROUPS, group_id, "updated", old)])
        return copy.deepcopy(group)

    def delete_group(self, group_id: str, soft: bool = False) -> None:
        if group_id in self.deleted_groups:
            if soft:
                raise KeyError(f"group {group_id!r} is already soft-deleted")
            del self.deleted_groups[group_id]
            self._commit([(GROUPS, group_id, "hard_deleted", None)])
            return
        self._group(group_id)
        group, members, parents = self.directory.remove_group(group_id)
        entries = [(GROUPS, parent, "member_removed", (group_id, GROUP_TYPE)) for parent in parents]
        entries.append((GROUPS, group_id, "soft_deleted" if soft else "hard_deleted", None))
        self._commit(entries)
        if soft:
            self.deleted_groups[group_id] = _DeletedGroup(group, members, parents)

    def restore_group(self, group_id: str) -> dict:
        saved = self.deleted_groups.pop(group_id, None)
        if saved is None:
            raise KeyError(f"no soft-deleted group with id {group_id!r}")
        d = self.directory
        d.add_group(saved.group)
        for odata_type, member_id in saved.members:
            if d.object_by_id(member_id) is not None:
                d.add_member(group_id, odata_type, member_id)
        entries = [(GROUPS, group_id, "restored", None)]
        for parent in saved.parents:
            if d.group_by_id(parent) is not None and d.add_member(parent, GROUP_TYPE, group_id):
                entries.append((GROUPS, parent, "member_added", (group_id, GROUP_TYPE)))
        self._commit(entries)
        return copy.deepcopy(saved.group)

    def add_member(self, group_id: str, member_id: str) -> None:
        self._group(group_id)
        odata_type = self._object_type(member_id)
        if member_id == group_id:
            raise ValueError("a group cannot be a member of itself")
        if not self.directory.add_member(group_id, odata_type, member_id):
            raise ValueError(f"{member_id!r} is already a direct member of group {group_id!r}")
        self._commit([(GROUPS, group_id, "member_added", (member_id, odata_type))])

    def remove_member(self, group_id: str, member_id: str) -> None:
        self._group(group_id)
        odata_type = self.directory.remove_member(group_id, member_id)
        if odata_type is None:
            raise KeyError(f"{member_id!r} is not a direct member of group {group_id!r}")
        self._commit([(GROUPS, group_id, "member_removed", (member_id, odata_type))])
