"""What a stage hands back when it committed: the numbers an operator sees on its
materialization, its check outcomes, and which table (and how many of the integration's rows in it)
it left behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tabulate import tabulate


@dataclass(frozen=True)
class Json:
    """A metadata value shown as JSON (counts by code, by kind, ...)."""

    value: Any


@dataclass(frozen=True)
class Markdown:
    """A metadata value shown as Markdown (a sample table, a bullet list)."""

    text: str


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass
class StageOutcome:
    """A committed stage. ``rows``: the integration's rows in ``table`` after the write;
    ``columns``: that table's columns; ``metadata``: plain values, ``Json`` or ``Markdown``."""

    metadata: dict[str, Any]
    checks: list = field(default_factory=list)  # list[checks.CheckOutcome]
    table: str | None = None
    rows: int | None = None
    columns: list[Column] = field(default_factory=list)


def preview(rows: list[dict], columns: list[str], limit: int = 10) -> Markdown:
    """The first rows as a Markdown table."""
    table = [[r.get(col) for col in columns] for r in rows[:limit]]
    return Markdown(tabulate(table, headers=columns, tablefmt="github") if table else "_no rows_")


def counts(values: Iterable) -> dict[str, int]:
    """How often each value occurs, by value."""
    found: dict[str, int] = {}
    for value in values:
        found[value] = found.get(value, 0) + 1
    return dict(sorted(found.items()))
