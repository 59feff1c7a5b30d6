"""Size and validity limits of what a source sends, applied before anything reaches DuckDB.

One bad value (a 20 MB ``displayName``, a lone surrogate such as the JSON escape ``"\\ud800"``,
a NUL character, NaN or an infinite number) must neither fail a stage nor exhaust DuckDB's memory.
It becomes one import error naming the record and the field, and the value is not imported (it is
treated as empty); the rest of that record, and every other record, sync as usual. No Dagster, no
DuckDB here.

Limits are Microsoft Graph's documented maximum lengths where Graph documents one (user and group
resources, on-premises extension attributes); any other string gets :data:`TEXT_LIMIT`
characters, any list or object :data:`JSON_LIMIT` characters of JSON. Lengths count Python
characters (code points).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import EXTENSION_ATTRIBUTES, EXTENSION_CONTAINER, MANAGER_FIELDS

VALUE_TOO_LONG = "value_too_long"
INVALID_TEXT = "invalid_text"
#: An object whose id is unusable (invalid text, or longer than :data:`ID_LIMIT`): nothing of it is imported.
INVALID_ID = "invalid_id"
#: NaN or an infinite number: no JSON number (Python's parser takes NaN, Infinity and 1e400 anyway).
INVALID_NUMBER = "invalid_number"
CODES = (VALUE_TOO_LONG, INVALID_TEXT, INVALID_ID, INVALID_NUMBER)

TEXT_LIMIT = 1024            # characters: a string whose limit Graph does not document
JSON_LIMIT = 64 * 1024       # characters of JSON: a list or object (proxyAddresses, an open extension)
ID_LIMIT = 256               # characters: an object id or worker id (Graph ids are 36-character GUIDs)
NAME_LIMIT = 256             # characters: a property name (the key itself)
SHOWN = 40                   # characters of a bad value a message shows

# Graph's documented maximum lengths (user resource); mail and userPrincipalName are bounded by the
# SMTP address length (64 + 1 + 255).
USER_LIMITS: dict[str, int] = {
    "displayName": 256, "givenName": 64, "surname": 64, "jobTitle": 128, "department": 64,
    "companyName": 64, "city": 128, "country": 128, "state": 128, "postalCode": 40, "streetAddress": 1024,
    "mobilePhone": 64, "mailNickname": 64, "employeeId": 16, "mail": 320, "userPrincipalName": 320,
}
GROUP_LIMITS: dict[str, int] = {"displayName": 256, "description": 1024, "mail": 320, "mailNickname": 64}
#: onPremisesExtensionAttributes.extensionAttribute1..15 (Exchange custom attributes).
EXTENSION_ATTRIBUTE_LIMIT = 1024
#: The manager of a list read ($expand=manager): its id and mail.
MANAGER_LIMITS = {"id": ID_LIMIT, "mail": 320}
# Directory extensions (extension_{appId}_{name}) hold a String (<= 256) or a Binary (<= 256 bytes,
# longer as base64): the type is not known here, so they get TEXT_LIMIT like other undocumented strings.

# Python's json turns a valid surrogate pair into one character: any surrogate left is a lone one,
# which cannot be encoded as UTF-8. NUL ends strings in C and DuckDB refuses it in JSON.
_INVALID = re.compile("[\x00\ud800-\udfff]")
#: The smallest limit of a part of a structured property (extension attributes, manager).
_PART_LIMIT = min(EXTENSION_ATTRIBUTE_LIMIT, *MANAGER_LIMITS.values())
# How json_problem sizes JSON (and _plainly_fine with it): per value its quotes or separator, per
# key its quotes and colon, per number, boolean or null a few characters.
_ITEM_SIZE, _KEY_SIZE, _SCALAR_SIZE = 2, 2, 8
_ESCAPE = re.compile("[\x00-\x1f\x7f\ud800-\udfff\"\\\\]")


def shown(value: str, limit: int = SHOWN) -> str:
    """A value as a message may show it: quoted, cut to ``limit`` characters (the full length
    said), with control characters and lone surrogates escaped."""
    head = _ESCAPE.sub(lambda m: "\\" + m.group() if m.group() in "\"\\" else f"\\u{ord(m.group()):04x}",
                       value[:limit])
    return f'"{head}"' + (f"… ({len(value):,} characters)" if len(value) > limit else "")


def text_problem(value: str, limit: int) -> tuple[str, str] | None:
    """(code, what is wrong) when a string is not importable, else None."""
    bad = _INVALID.search(value)
    if bad is not None:
        char = bad.group()
        what = "a NUL character" if char == "\x00" else f"a lone surrogate U+{ord(char):04X}"
        return INVALID_TEXT, f"is not valid text ({what} at character {bad.start() + 1:,}: {shown(value)})"
    if len(value) > limit:
        return VALUE_TOO_LONG, f"is {len(value):,} characters, more than the {limit:,} allowed ({shown(value)})"
    return None


def json_problem(value: object, limit: int = JSON_LIMIT) -> tuple[str, str] | None:
    """(code, what is wrong) for a list or object: a string in it that is not valid text, or more
    than ``limit`` characters of JSON (counted roughly: strings, keys and separators). The walk
    uses its own stack, so nesting depth costs no recursion."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        size += _ITEM_SIZE
        if isinstance(item, str):
            bad = _INVALID.search(item)
            if bad is not None:
                return text_problem(item, limit)
            size += len(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str) and _INVALID.search(key):
                    return text_problem(key, limit)
                size += len(str(key)) + _KEY_SIZE
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return number_problem(item)
        else:
            size += _SCALAR_SIZE
        if size > limit:
            return VALUE_TOO_LONG, f"is more than {limit:,} characters of JSON"
    return None


def number_problem(value: float) -> tuple[str, str]:
    return INVALID_NUMBER, f"is not a JSON number ({value!r})"


def value_problem(value: object, limit: int) -> tuple[str, str] | None:
    """(code, what is wrong) for one property value; booleans, null and finite numbers are always fine."""
    if isinstance(value, str):
        return text_problem(value, limit)
    if isinstance(value, float) and not math.isfinite(value):
        return number_problem(value)
    if isinstance(value, (dict, list)):
        return json_problem(value)
    return None


def usable_id(value: object) -> bool:
    """An id that can be stored and named: valid text of at most :data:`ID_LIMIT` characters."""
    return isinstance(value, str) and text_problem(value, ID_LIMIT) is None


@dataclass
class Checked:
    """Records after the limits: ``items`` as they may be imported (bad values None, objects with
    an unusable id left out), the import errors (one per record and field) and, per record, the
    fields these items carried (None: the whole record, e.g. removed), which is what an
    incremental stage replaces the errors of (see ``warehouse.import_errors.replace_value_issues``)."""

    items: list[dict] = field(default_factory=list)
    issues: list[ImportIssue] = field(default_factory=list)
    assessed: dict[str, set[str] | None] = field(default_factory=dict)


class _Checker:
    def __init__(self, stage: str, kind: str, known: dict[str, dict] | None, track: bool = True) -> None:
        self.stage, self.kind, self.known, self.track = stage, kind, known or {}, track
        self.out = Checked()
        self._issues: dict[tuple[str, str], ImportIssue] = {}

    def who(self, oid: str, item: dict) -> str:
        """The object as a message names it: id and, for a user, a usable UPN or mail."""
        if self.kind != "user":
            name = item.get("displayName")
            if not (isinstance(name, str) and text_problem(name, GROUP_LIMITS["displayName"]) is None):
                name = (self.known.get(oid) or {}).get("displayName")
            return f"group {oid}" + (f" ({name})" if isinstance(name, str) and name else "")
        for source in (item, self.known.get(oid) or {}):
            for key in ("userPrincipalName", "mail"):
                value = source.get(key)
                if isinstance(value, str) and value and text_problem(value, USER_LIMITS[key]) is None:
                    return f"user {oid} ({value})"
        return f"user {oid}"

    def seen(self, oid: str, fields: Iterable[str] | None) -> None:
        if fields is None:
            self.out.assessed[oid] = None
            self._issues = {k: v for k, v in self._issues.items() if k[0] != oid}
            return
        assessed = self.out.assessed.get(oid, ())
        if assessed is None:
            return
        if not assessed:
            self.out.assessed[oid] = assessed = set()
        assessed.update(fields)
        # The last item carrying a field decides it (delta items are patches applied in order).
        if self._issues:
            for name in fields:
                self._issues.pop((oid, name), None)

    def report(self, oid: str, item: dict, name: str, problem: tuple[str, str]) -> None:
        code, what = problem
        self._issues[(oid, name)] = ImportIssue(self.stage, oid, name, code,
                                                f"{self.who(oid, item)}: {name} {what}; not imported")

    def unusable(self, item: dict) -> None:
        oid = item.get("id")
        text = oid if isinstance(oid, str) else repr(oid)
        record = shown(text, SHOWN)
        problem = text_problem(text, ID_LIMIT) or (INVALID_TEXT, f"is not text ({shown(text)})")
        # Named by the id as shown; a later round carrying the same object replaces the error.
        self.seen(record, None)
        self._issues[(record, "id")] = ImportIssue(self.stage, record, "id", INVALID_ID,
                                                   f"{self.kind} with id {record}: the id {problem[1]}; "
                                                   f"the {self.kind} is not imported")

    def finish(self) -> Checked:
        self.out.issues.extend(self._issues.values())
        return self.out


def _limit_for(kind: str, name: str) -> int:
    return (USER_LIMITS if kind == "user" else GROUP_LIMITS).get(name, TEXT_LIMIT)


def _check_links(checker: _Checker, oid: str, item: dict, name: str, links: object) -> object:
    """``manager@delta`` / ``members@delta``: links with an unusable id are dropped."""
    if not isinstance(links, list):
        return links
    kept = [link for link in links if not isinstance(link, dict) or usable_id(link.get("id"))]
    if len(kept) < len(links):
        bad = next(link for link in links if link not in kept)
        field_name = "managerId" if name == "manager@delta" else "members"
        problem = text_problem(bad.get("id"), ID_LIMIT) if isinstance(bad.get("id"), str) else None
        if field_name == "members":
            checker.seen(oid, ["members"])  # a new error about members takes the stored one's place
        checker.report(oid, item, field_name, (INVALID_ID, f"has {len(links) - len(kept):,} link(s) with an unusable "
                                                           f"id ({problem[1] if problem else 'not text'})"))
    return kept


def _field_names(kind: str, item: dict) -> list[str]:
    """The fields an item carries whole, as import errors name them (members@delta is only the
    changed members: it replaces no error)."""
    names = []
    for name in item:
        if kind == "user" and name == EXTENSION_CONTAINER:
            names.extend(EXTENSION_ATTRIBUTES)
        elif kind == "user" and name == "manager":
            names.extend(MANAGER_FIELDS)
        elif name != "members@delta":
            names.append("managerId" if name == "manager@delta" else name)
    return names


def _plainly_fine(kind: str, item: dict) -> bool:
    """True when no value of the item can be beyond a limit: the common case, decided with a
    length per value and one search over all its text. False sends the item the slow, exact way
    (also for anything nested deeper than a list of objects).

    It must never accept what the exact way refuses: lists and objects are sized as
    :func:`json_problem` sizes them (separators and :data:`_SCALAR_SIZE` per number, boolean or
    null included), and the sum over the whole item, never less than any one value's size, must
    stay within :data:`JSON_LIMIT`."""
    limits = USER_LIMITS if kind == "user" else GROUP_LIMITS
    parts: list[str] = []
    size = 0  # what json_problem would count for the item's lists and objects, all together
    try:
        for name, value in item.items():
            if len(name) > NAME_LIMIT:
                return False
            parts.append(name)
            kind_of = type(value)
            if kind_of is str:
                if len(value) > limits.get(name, TEXT_LIMIT):
                    return False
                parts.append(value)
            elif kind_of is float and not math.isfinite(value):
                return False
            elif kind_of is dict or kind_of is list:
                if kind == "user" and name == "manager" and kind_of is dict and not usable_id(value.get("id")):
                    return False  # a manager without a usable id is refused the exact way
                is_links = name in ("manager@delta", "members@delta")
                size += _ITEM_SIZE
                for element in (value.items() if kind_of is dict else value):
                    key, part = element if kind_of is dict else (None, element)
                    size += _ITEM_SIZE
                    if key is not None:
                        if len(key) > NAME_LIMIT:
                            return False
                        parts.append(key)
                        size += len(key) + _KEY_SIZE
                    if type(part) is str:
                        if kind_of is dict and len(part) > _PART_LIMIT:
                            return False
                        parts.append(part)
                        size += len(part)
                    elif type(part) is dict:
                        if is_links and not (type(part.get("id")) is str and 0 < len(part["id"]) <= ID_LIMIT):
                            return False
                        for sub_key, sub in part.items():
                            if type(sub) in (dict, list) or len(sub_key) > NAME_LIMIT:
                                return False
                            parts.append(sub_key)
                            size += len(sub_key) + _KEY_SIZE + _ITEM_SIZE
                            if type(sub) is str:
                                parts.append(sub)
                                size += len(sub)
                            elif type(sub) is float and not math.isfinite(sub):
                                return False
                            else:
                                size += _SCALAR_SIZE
                    elif type(part) is list or (type(part) is float and not math.isfinite(part)):
                        return False
                    else:
                        size += _SCALAR_SIZE
    except TypeError:
        return False
    text = "".join(parts)
    return len(text) <= JSON_LIMIT and size <= JSON_LIMIT and _INVALID.search(text) is None


def _check_object(checker: _Checker, item: dict) -> dict | None:
    """One Graph object (or delta item), with bad values None; None when its id is unusable."""
    oid = item.get("id")
    if not usable_id(oid):
        checker.unusable(item)
        return None
    if "@removed" in item:
        checker.seen(oid, None)
        return item
    if checker.track:
        checker.seen(oid, _field_names(checker.kind, item))
    if _plainly_fine(checker.kind, item):
        return item
    out: dict = {}
    for name, value in item.items():
        if not isinstance(name, str) or _INVALID.search(name) or len(name) > NAME_LIMIT:
            # A property name that cannot be stored: left out, and said (shown escaped and cut).
            label = shown(str(name))
            checker.seen(oid, [label])
            checker.report(oid, item, label, (INVALID_TEXT if _INVALID.search(str(name)) else VALUE_TOO_LONG,
                                              "is not a usable property name"))
            continue
        if name == "id":
            out[name] = value
            continue
        if name in ("manager@delta", "members@delta"):
            if name == "manager@delta":
                # The manager link is replaced whole: this one decides the error.
                checker.seen(oid, ["managerId"])
            # members@delta is not: it carries only the members that changed, so the error about a
            # member left out stands until a full read reads all members again.
            out[name] = _check_links(checker, oid, item, name, value)
            continue
        if checker.kind == "user" and name == EXTENSION_CONTAINER and (value is None or isinstance(value, dict)):
            # The fifteen come (and go) together: errors of those it no longer carries are over too.
            checker.seen(oid, EXTENSION_ATTRIBUTES)
            out[name] = value if value is None else _check_parts(
                checker, oid, item, value, lambda key: key, lambda key: EXTENSION_ATTRIBUTE_LIMIT)
            continue
        if checker.kind == "user" and name == "manager" and isinstance(value, dict):
            labels = {prop: f for f, prop in MANAGER_FIELDS.items()}
            if not usable_id(value.get("id")):
                checker.seen(oid, ["managerId"])
                checker.report(oid, item, "managerId", text_problem(str(value.get("id")), ID_LIMIT)
                               or (INVALID_TEXT, "is not text"))
                out[name] = None
                continue
            out[name] = _check_parts(checker, oid, item, value, lambda key: labels.get(key, f"manager.{key}"),
                                     lambda key: MANAGER_LIMITS.get(key, TEXT_LIMIT))
            continue
        checker.seen(oid, [name])
        problem = value_problem(value, _limit_for(checker.kind, name))
        if problem is not None:
            checker.report(oid, item, name, problem)
            value = None
        out[name] = value
    return out


def _check_parts(checker: _Checker, oid: str, item: dict, parts: dict, label, limit) -> dict:
    """A structured property whose parts are fields of their own (extension attributes, manager)."""
    out = {}
    for key, value in parts.items():
        name = label(key) if isinstance(key, str) and not _INVALID.search(key) and len(key) <= NAME_LIMIT else None
        if name is None:
            name = shown(str(key))
            checker.seen(oid, [name])
            checker.report(oid, item, name, (INVALID_TEXT, "is not a usable property name"))
            continue
        checker.seen(oid, [name])
        problem = value_problem(value, limit(key))
        if problem is not None:
            checker.report(oid, item, name, problem)
            value = None
        out[key] = value
    return out


def _check_objects(kind: str, items: Iterable[dict], stage: str, known: dict[str, dict] | None,
                   track: bool) -> Checked:
    checker = _Checker(stage, kind, known, track)
    for item in items:
        kept = _check_object(checker, item)
        if kept is not None:
            checker.out.items.append(kept)
    return checker.finish()


class PageCheck:
    """The limits applied to one read page by page, as it streams: the items of each page as they
    may be imported, and at the end the import errors, the same as checking all the pages at once
    (a later item carrying a field decides its error)."""

    def __init__(self, kind: str, stage: str) -> None:
        self._checker = _Checker(stage, kind, None, track=False)

    def page(self, items: Iterable[dict]) -> list[dict]:
        kept = (_check_object(self._checker, item) for item in items)
        return [item for item in kept if item is not None]

    def issues(self) -> list[ImportIssue]:
        return list(self._checker._issues.values())


def check_users(items: Iterable[dict], stage: str, known: dict[str, dict] | None = None,
                track: bool = True) -> Checked:
    """Users (a list read) or users delta items, in order. ``known``: stored users by id, which
    name a user whose item carries neither UPN nor mail. ``track``: fill ``Checked.assessed``
    (only an incremental round needs it)."""
    return _check_objects("user", items, stage, known, track)


def check_groups(items: Iterable[dict], stage: str, known: dict[str, dict] | None = None,
                 track: bool = True) -> Checked:
    """Groups or groups delta items (``members@delta`` links with an unusable id dropped)."""
    return _check_objects("group", items, stage, known, track)


def check_entry(entry: dict, keep: set[str], id_field: str, position: int, stage: str
                ) -> tuple[str | None, dict, list[ImportIssue], bool]:
    """One Workday report entry: (its id, or None when it has none; the kept columns with bad
    values left out; the import errors; False when the id itself is unusable and the entry must
    not be imported). Report columns have no documented limits: :data:`TEXT_LIMIT` per string,
    :data:`JSON_LIMIT` per list or object."""
    value = entry.get(id_field)
    wid = str(value).strip() if value is not None and not isinstance(value, (dict, list)) else ""
    record = wid or f"entry {position}"
    issues: list[ImportIssue] = []
    if wid and not usable_id(wid):
        issues.append(ImportIssue(stage, f"entry {position}", id_field, INVALID_ID,
                                  f"report entry {position}: {id_field} {text_problem(wid, ID_LIMIT)[1]}; "
                                  "the entry is not imported"))
        return None, {}, issues, False
    kept = {}
    for key, val in entry.items():
        if key not in keep:
            continue
        problem = value_problem(val, TEXT_LIMIT)
        if problem is not None:
            code, what = problem
            who = f"worker {wid}" if wid else f"report entry {position}"
            issues.append(ImportIssue(stage, record, key, code, f"{who}: {key} {what}; not imported"))
            continue
        kept[key] = val
    return wid or None, kept, issues, True


def check_members(group_id: str, members: Iterable[dict], stage: str) -> tuple[list[dict], list[ImportIssue]]:
    """A group's member objects (a list read) without those whose id is unusable, and one import
    error on the group when any was left out."""
    members = list(members)
    kept = [m for m in members if usable_id(m.get("id"))]
    if len(kept) == len(members):
        return members, []
    bad = next(m for m in members if not usable_id(m.get("id")))
    problem = text_problem(bad["id"], ID_LIMIT) if isinstance(bad.get("id"), str) else None
    return kept, [ImportIssue(stage, group_id, "members", INVALID_ID,
                              f"group {group_id}: members has {len(members) - len(kept):,} member(s) with an "
                              f"unusable id ({problem[1] if problem else 'not text'}); they are not imported")]
