"""Exclusion rules: which mapped contacts are not synced.

Rules compare the imported (directory) field as read, case-sensitively, as the product we model
requires ("Inactive" does not match "inactive"). That is also why the rules run here and are never
pushed into a Graph ``$filter``: Graph compares strings ignoring case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterable, Protocol


class Condition(Protocol):
    field: str | None
    contact_field: str | None
    equals: Any
    not_equals: Any
    one_of: list | None
    not_in: list | None
    contains: Any
    starts_with: str | None
    is_empty: bool | None
    is_not_empty: bool | None
    all: list | None
    any: list | None


class Rule(Condition, Protocol):
    name: str


@dataclass
class ExclusionResult:
    kept: list[str] = field(default_factory=list)  # contact ids
    # (contact, name of the first rule that matched)
    excluded: list[tuple[dict, str]] = field(default_factory=list)
    evaluated: int = 0


def _same(actual: Any, expected: Any) -> bool:
    # bool is an int in Python; keep `true` from matching 1 and vice versa.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    # A Date contact field compares with an ISO date written in the configuration.
    if isinstance(actual, date) and isinstance(expected, str):
        try:
            expected = date.fromisoformat(expected)
        except ValueError:
            return False
    return actual == expected


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def matches(condition: Condition, contact: dict) -> bool:
    """Whether a contact (contact fields plus ``imported``) meets a condition."""
    if condition.all is not None:
        return all(matches(c, contact) for c in condition.all)
    if condition.any is not None:
        return any(matches(c, contact) for c in condition.any)
    if condition.field is not None:
        value = contact["imported"].get(condition.field)
    else:
        value = contact.get(condition.contact_field)
    if condition.is_empty:
        return _empty(value)
    if condition.is_not_empty:
        return not _empty(value)
    if condition.equals is not None:
        return _same(value, condition.equals)
    if condition.not_equals is not None:
        return not _same(value, condition.not_equals)
    if condition.one_of is not None:
        return any(_same(value, option) for option in condition.one_of)
    if condition.not_in is not None:
        return not any(_same(value, option) for option in condition.not_in)
    if condition.contains is not None:
        if isinstance(value, list):
            return any(_same(item, condition.contains) for item in value)
        return isinstance(value, str) and isinstance(condition.contains, str) and condition.contains in value
    if condition.starts_with is not None:
        return isinstance(value, str) and value.startswith(condition.starts_with)
    return False


def apply_exclusions(contacts: Iterable[dict], rules: list[Rule]) -> ExclusionResult:
    """Split contacts into kept (their ids: a kept contact is not held) and excluded; each excluded
    contact names the first rule it met."""
    result = ExclusionResult()
    for contact in contacts:
        result.evaluated += 1
        matched = next((r.name for r in rules if matches(r, contact)), None)
        if matched is None:
            result.kept.append(contact["contact_id"])
        else:
            result.excluded.append((contact, matched))
    return result


_OPERATORS = ("is_empty", "is_not_empty", "equals", "not_equals", "one_of", "not_in", "contains", "starts_with")


def _value_of(condition: Condition, contact: dict) -> Any:
    if condition.field is not None:
        return contact["imported"].get(condition.field)
    return contact.get(condition.contact_field)


def deciding(condition: Condition, contact: dict) -> list[str]:
    """Why ``condition`` holds or fails for ``contact``, as the tests that decide it, each with the
    value it saw: every test of an ``all`` that holds, the first failing one when it fails (and the
    reverse for ``any``)."""
    if condition.all is not None or condition.any is not None:
        parts, want = (condition.all, True) if condition.all is not None else (condition.any, False)
        outcome = matches(condition, contact)
        # all: held -> every part; failed -> the first part that failed. any: the reverse.
        if outcome == want:
            chosen = parts if want else [next(p for p in parts if matches(p, contact))]
        else:
            chosen = [next(p for p in parts if not matches(p, contact))] if want else parts
        return [line for part in chosen for line in deciding(part, contact)]
    subject = condition.field if condition.field is not None else condition.contact_field
    operator = next(op for op in _OPERATORS if getattr(condition, op) is not None)
    value = _value_of(condition, contact)
    shown = value.isoformat() if hasattr(value, "isoformat") else value
    if operator in ("is_empty", "is_not_empty"):
        return [f"{subject} {operator.replace('_', ' ')} (its value: {shown!r})"]
    return [f"{subject} {operator.replace('_', ' ')} {getattr(condition, operator)!r} (its value: {shown!r})"]
