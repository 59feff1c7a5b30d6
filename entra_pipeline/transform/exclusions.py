"""Exclusion rules: which mapped contacts are not synced.

Rules compare the imported (directory) field as read, case-sensitively, as the product we model
requires ("Inactive" does not match "inactive"). That is also why the rules run here and are never
pushed into a Graph ``$filter``: Graph compares strings ignoring case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol


class Rule(Protocol):
    name: str
    field: str
    equals: Any
    not_equals: Any
    one_of: list | None
    starts_with: str | None
    is_empty: bool | None


@dataclass
class ExclusionResult:
    kept: list[dict] = field(default_factory=list)
    # (contact, name of the first rule that matched)
    excluded: list[tuple[dict, str]] = field(default_factory=list)


def _same(actual: Any, expected: Any) -> bool:
    # bool is an int in Python; keep `true` from matching 1 and vice versa.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    return actual == expected


def rule_matches(rule: Rule, imported: dict) -> bool:
    value = imported.get(rule.field)
    if rule.is_empty is not None:
        empty = value is None or value == "" or value == []
        return empty == rule.is_empty
    if rule.equals is not None:
        return _same(value, rule.equals)
    if rule.not_equals is not None:
        return not _same(value, rule.not_equals)
    if rule.one_of is not None:
        return any(_same(value, option) for option in rule.one_of)
    if rule.starts_with is not None:
        return isinstance(value, str) and value.startswith(rule.starts_with)
    return False


def apply_exclusions(contacts: Iterable[dict], rules: list[Rule]) -> ExclusionResult:
    result = ExclusionResult()
    for contact in contacts:
        matched = next((r.name for r in rules if rule_matches(r, contact["imported"])), None)
        if matched is None:
            result.kept.append(contact)
        else:
            result.excluded.append((contact, matched))
    return result
