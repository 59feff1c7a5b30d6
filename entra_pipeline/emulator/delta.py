"""Delta rounds: what changed since a version, folded from the change log (or the whole
directory for a first round), cut into pages, and the opaque, signed tokens of their links
(see the emulator README)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from .changes import GROUPS, USERS, ChangeTracker
from .odata import EntitySchema, group_schema, user_schema

__all__ = [
    "DELTA", "SKIP", "DeltaToken", "Selection", "TokenCodec", "TokenError", "group_round", "paginate", "user_round",
]


_UNSET = object()


def _removed(object_id: str, reason: str) -> dict:
    return {"id": object_id, "@removed": {"reason": reason}}


def _ref(odata_type: str, object_id: str) -> dict:
    return {"@odata.type": odata_type, "id": object_id}


def _removed_ref(odata_type: str, object_id: str) -> dict:
    return {"@odata.type": odata_type, "id": object_id, "@removed": {"reason": "deleted"}}


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


def _fold(tracker: ChangeTracker, resource: str, since: int) -> dict[str, _Fold]:
    folds: dict[str, _Fold] = {}
    for object_id, event, data in tracker.logs[resource].since(since):
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


def _projector(schema: EntitySchema, names: tuple[str, ...]):
    pairs = tuple((name, schema.extra_defaults.get(name)) for name in names)
    return lambda obj: {name: obj.get(name, default) for name, default in pairs}


def _manager_delta(tracker: ChangeTracker, user_id: str) -> list[dict] | None:
    manager_id = tracker.directory.manager_of.get(user_id)
    if manager_id is None:
        return None
    found = tracker.directory.object_by_id(manager_id)
    return None if found is None else [_ref(found[0], manager_id)]


def user_round(tracker: ChangeTracker, selection: Selection, since: int | None) -> list[tuple[dict, None]]:
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
    d = tracker.directory
    project = _projector(user_schema(d.extension_property), selection.names)
    with_manager = selection.navigation

    def full(user: dict) -> dict:
        item = project(user)
        if with_manager:
            manager = _manager_delta(tracker, user["id"])
            if manager is not None:
                item["manager@delta"] = manager
        return item

    if since is None:
        out = [(full(user), None) for user in d.users]
        out += [(_removed(user_id, "changed"), None) for user_id in tracker.deleted_users]
        return out
    out = []
    for user_id, fold in _fold(tracker, USERS, since).items():
        user = d.user_by_id(user_id)
        if user is None:
            out.append((_removed(user_id, "changed" if user_id in tracker.deleted_users else "deleted"), None))
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
                current = _manager_delta(tracker, user_id)
                if current is not None:
                    item["manager@delta"] = current
                elif old_id is not None:
                    item["manager@delta"] = [_removed_ref(old_type, old_id)]
        if len(item) > 1:
            out.append((item, None))
    return out


def group_round(tracker: ChangeTracker, selection: Selection, since: int | None) -> list[tuple[dict, list | None]]:
    """The ``(object, members@delta or None)`` of a groups round, in order.

    Same rules as :func:`user_round` for properties and ``@removed``. With
    ``members`` selected, a full round (or a group created or restored
    after ``since``) lists every direct member; otherwise each member
    whose membership at ``since`` differs from now is an addition or a
    removal (``@removed`` ``deleted``), and a group whose only change is
    membership carries ``id`` and ``members@delta`` only.
    """
    d = tracker.directory
    project = _projector(group_schema(), selection.names)
    with_members = selection.navigation

    def full(group: dict):
        if not with_members:
            return project(group), None
        return project(group), [_ref(t, m) for t, m in d.members.get(group["id"], ())]

    if since is None:
        out = [full(group) for group in d.groups]
        out += [(_removed(group_id, "changed"), None) for group_id in tracker.deleted_groups]
        return out
    out = []
    for group_id, fold in _fold(tracker, GROUPS, since).items():
        group = d.group_by_id(group_id)
        if group is None:
            reason = "changed" if group_id in tracker.deleted_groups else "deleted"
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
