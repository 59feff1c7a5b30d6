"""Delta queries for the emulator: change log, recycle bin, delta rounds and their tokens.

:class:`ChangeTracker` owns one :class:`~.directory.Directory` and is the only
code that changes it on behalf of the server's change API
(``Emulator.add_user`` ...). Every successful change bumps a global,
monotonically increasing ``version`` once and appends what changed to a per
resource log ordered by version:

    users   ``created``, ``restored``, ``soft_deleted``, ``hard_deleted``,
            ``updated`` (``{property: value before}``), ``manager``
            (``(previous manager id, its @odata.type)``)
    groups  the same (no ``manager``), plus ``member_added`` and
            ``member_removed`` (``(member id, @odata.type)``)

A round from version ``V`` finds the first entry after ``V`` by bisection and
folds only the entries after it, so it costs O(changes since V); a full round
(no token) walks the directory once. The folding rules are documented on
:meth:`ChangeTracker.user_round` and :meth:`ChangeTracker.group_round`.

Soft-deleted users and groups wait in the tracker's recycle bin
(``deleted_users`` / ``deleted_groups``) with the links they had, so a
restore brings back memberships, the manager link and direct reports.

Tokens (:class:`TokenCodec`) are opaque base64url, HMAC-SHA256 signed with a
key of this process, and carry an instance id so that a token of another
emulator is recognised as such instead of as tampered.
"""

from __future__ import annotations

import base64
import bisect
import copy
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import datetime, timezone

from .directory import Directory
from .model import CONTACT_TYPE, GROUP_TYPE, USER_PROPERTIES, USER_TYPE
from .odata import EntitySchema, group_schema, user_schema

__all__ = ["ChangeTracker", "DeltaToken", "Selection", "TokenCodec", "TokenError", "paginate", "USERS", "GROUPS"]

USERS, GROUPS = "users", "groups"
_EXT_ATTRS = tuple(f"extensionAttribute{i}" for i in range(1, 16))
_EXT_ATTR_NAMES = {name.lower(): name for name in _EXT_ATTRS}
_LIST_USER_PROPS = ("otherMails", "proxyAddresses", "businessPhones")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MANAGER_TYPES = (USER_TYPE, CONTACT_TYPE)
_UNSET = object()


def _removed(object_id: str, reason: str) -> dict:
    return {"id": object_id, "@removed": {"reason": reason}}


def _ref(odata_type: str, object_id: str) -> dict:
    return {"@odata.type": odata_type, "id": object_id}


def _removed_ref(odata_type: str, object_id: str) -> dict:
    return {"@odata.type": odata_type, "id": object_id, "@removed": {"reason": "deleted"}}


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


class _Fold:
    """What happened to one object after V."""

    __slots__ = ("events", "old", "manager", "members")

    def __init__(self) -> None:
        self.events: set[str] = set()
        self.old: dict = {}  # property -> value at V (the first "updated" entry after V wins)
        self.manager = _UNSET  # (manager id at V, its type)
        self.members: dict[str, list] = {}  # member id -> [member at V, type, member now]


@dataclass(frozen=True)
class Selection:
    """A delta ``$select`` resolved against a schema."""

    names: tuple[str, ...]  # properties, ``id`` first
    navigation: bool  # users: ``manager`` selected; groups: ``members`` selected


class ChangeTracker:
    """Change API, change log and recycle bin for one directory (see the module docstring).

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

    # -- rounds -------------------------------------------------------------------

    def _fold(self, resource: str, since: int) -> dict[str, _Fold]:
        folds: dict[str, _Fold] = {}
        for object_id, event, data in self.logs[resource].since(since):
            fold = folds.get(object_id)
            if fold is None:
                fold = folds[object_id] = _Fold()
            if event == "updated":
                for name, old in data.items():
                    fold.old.setdefault(name, old)
            elif event == "manager":
                if fold.manager is _UNSET:
                    fold.manager = data
            elif event in ("member_added", "member_removed"):
                member_id, odata_type = data
                added = event == "member_added"
                state = fold.members.get(member_id)
                if state is None:
                    fold.members[member_id] = [not added, odata_type, added]
                else:
                    state[1], state[2] = odata_type, added
            else:
                fold.events.add(event)
        return folds

    @staticmethod
    def _projector(schema: EntitySchema, names: tuple[str, ...]):
        pairs = tuple((name, schema.extra_defaults.get(name)) for name in names)
        return lambda obj: {name: obj.get(name, default) for name, default in pairs}

    def _manager_delta(self, user_id: str) -> list[dict] | None:
        manager_id = self.directory.manager_of.get(user_id)
        if manager_id is None:
            return None
        found = self.directory.object_by_id(manager_id)
        return None if found is None else [_ref(found[0], manager_id)]

    def user_round(self, selection: Selection, since: int | None) -> list[tuple[dict, None]]:
        """The objects of a users round, in order.

        Full round (``since`` None): every user with the selected properties
        (``manager@delta`` with the current manager when ``manager`` is
        selected and set), then ``@removed`` ``changed`` for each user in the
        recycle bin. From ``since``: users created or restored after it in
        full; users updated after it with ``id`` plus the selected properties
        whose current value differs from their value at ``since`` (a change
        back to the old value is not reported) and ``manager@delta`` if the
        manager differs from the one at ``since`` (the old one with
        ``@removed`` when there is none now); ``@removed`` ``changed`` for
        users now in the recycle bin and ``deleted`` for users gone for good.
        A user created and deleted after ``since`` is reported removed.
        """
        d = self.directory
        project = self._projector(user_schema(d.extension_property), selection.names)
        with_manager = selection.navigation

        def full(user: dict) -> dict:
            item = project(user)
            if with_manager:
                manager = self._manager_delta(user["id"])
                if manager is not None:
                    item["manager@delta"] = manager
            return item

        if since is None:
            out = [(full(user), None) for user in d.users]
            out += [(_removed(user_id, "changed"), None) for user_id in self.deleted_users]
            return out
        out = []
        for user_id, fold in self._fold(USERS, since).items():
            user = d.user_by_id(user_id)
            if user is None:
                out.append((_removed(user_id, "changed" if user_id in self.deleted_users else "deleted"), None))
                continue
            if fold.events & {"created", "restored"}:
                out.append((full(user), None))
                continue
            item = {"id": user_id}
            for name in selection.names[1:]:
                if name in fold.old:
                    value = user.get(name)
                    if value != fold.old[name]:
                        item[name] = value
            if with_manager and fold.manager is not _UNSET:
                old_id, old_type = fold.manager
                if d.manager_of.get(user_id) != old_id:
                    current = self._manager_delta(user_id)
                    if current is not None:
                        item["manager@delta"] = current
                    elif old_id is not None:
                        item["manager@delta"] = [_removed_ref(old_type, old_id)]
            if len(item) > 1:
                out.append((item, None))
        return out

    def group_round(self, selection: Selection, since: int | None) -> list[tuple[dict, list | None]]:
        """The ``(object, members@delta or None)`` of a groups round, in order.

        Same rules as :meth:`user_round` for properties and ``@removed``. With
        ``members`` selected, a full round (or a group created or restored
        after ``since``) lists every direct member; otherwise each member
        whose membership at ``since`` differs from now is an addition or a
        removal (``@removed`` ``deleted``), and a group whose only change is
        membership carries ``id`` and ``members@delta`` only.
        """
        d = self.directory
        project = self._projector(group_schema(), selection.names)
        with_members = selection.navigation

        def full(group: dict):
            if not with_members:
                return project(group), None
            return project(group), [_ref(t, m) for t, m in d.members.get(group["id"], ())]

        if since is None:
            out = [full(group) for group in d.groups]
            out += [(_removed(group_id, "changed"), None) for group_id in self.deleted_groups]
            return out
        out = []
        for group_id, fold in self._fold(GROUPS, since).items():
            group = d.group_by_id(group_id)
            if group is None:
                reason = "changed" if group_id in self.deleted_groups else "deleted"
                out.append((_removed(group_id, reason), None))
                continue
            if fold.events & {"created", "restored"}:
                out.append(full(group))
                continue
            item = {"id": group_id}
            for name in selection.names[1:]:
                if name in fold.old:
                    value = group.get(name)
                    if value != fold.old[name]:
                        item[name] = value
            members = None
            if with_members:
                members = [
                    _ref(odata_type, member_id) if now else _removed_ref(odata_type, member_id)
                    for member_id, (was, odata_type, now) in fold.members.items() if was != now
                ] or None
            if len(item) > 1 or members:
                out.append((item, members))
        return out


def paginate(entries: list[tuple[dict, list | None]], page_size: int, members_per_page: int) -> list[list[dict]]:
    """Cut a round into pages of at most ``page_size`` objects and ``members_per_page`` member entries.

    A group whose ``members@delta`` does not fit continues on the next
    page(s) as ``{"id", "members@delta"}`` with the next slice; an object
    never appears twice on one page. There is always at least one page.
    """
    pages: list[list[dict]] = []
    page: list[dict] = []
    used = 0
    for obj, members in entries:
        if members is None:
            if len(page) >= page_size:
                pages.append(page)
                page, used = [], 0
            page.append(obj)
            continue
        offset, first = 0, True
        while True:
            if len(page) >= page_size or (used >= members_per_page and offset < len(members)):
                pages.append(page)
                page, used = [], 0
            chunk = members[offset:offset + members_per_page - used]
            item = dict(obj) if first else {"id": obj["id"]}
            item["members@delta"] = chunk
            page.append(item)
            used += len(chunk)
            offset += len(chunk)
            first = False
            if offset >= len(members):
                break
            pages.append(page)
            page, used = [], 0
    pages.append(page)
    return pages


# ---------------------------------------------------------------------------
# tokens

SKIP, DELTA = 1, 2
_RESOURCE_CODES = {USERS: 1, GROUPS: 2}
_RESOURCES = {code: name for name, code in _RESOURCE_CODES.items()}
_FORMAT = 1
# format, kind, resource, has select, instance, seq, issued (ms), version, round id, page
_LAYOUT = struct.Struct(">BBBB8sQQQ16sI")
_MAC_SIZE = 16


@dataclass(frozen=True)
class DeltaToken:
    kind: int  # SKIP or DELTA
    resource: str  # USERS or GROUPS
    seq: int  # the round that issued it (expiry and invalidation compare it)
    issued_ms: int  # wall clock at issue, milliseconds
    version: int  # change-log version of the round's snapshot
    round_id: bytes  # the round (skip tokens); zeros in delta tokens
    page: int  # the page a skip token asks for
    select: str | None  # the round's $select


class TokenError(Exception):
    """``foreign`` True: well-formed but from another emulator; False: malformed or tampered."""

    def __init__(self, foreign: bool) -> None:
        super().__init__("foreign" if foreign else "invalid")
        self.foreign = foreign


class TokenCodec:
    """Encodes :class:`DeltaToken` as base64url payload + truncated HMAC-SHA256."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self.instance = secrets.token_bytes(8)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_SIZE]

    def encode(self, token: DeltaToken) -> str:
        select = token.select.encode("utf-8") if token.select is not None else b""
        payload = _LAYOUT.pack(_FORMAT, token.kind, _RESOURCE_CODES[token.resource],
                               token.select is not None, self.instance, token.seq, token.issued_ms,
                               token.version, token.round_id.ljust(16, b"\0"), token.page) + select
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode("ascii")

    def decode(self, text: str) -> DeltaToken:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, TypeError):
            raise TokenError(False) from None
        if len(raw) < _LAYOUT.size + _MAC_SIZE:
            raise TokenError(False)
        payload, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
        fmt, kind, resource, has_select, instance, seq, issued, version, round_id, page = \
            _LAYOUT.unpack(payload[:_LAYOUT.size])
        if fmt != _FORMAT or kind not in (SKIP, DELTA) or resource not in _RESOURCES or has_select > 1:
            raise TokenError(False)
        if not hmac.compare_digest(instance, self.instance):
            raise TokenError(True)
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TokenError(False)
        try:
            select = payload[_LAYOUT.size:].decode("utf-8") if has_select else None
        except UnicodeDecodeError:
            raise TokenError(False) from None
        return DeltaToken(kind, _RESOURCES[resource], seq, issued, version, round_id, page, select)
