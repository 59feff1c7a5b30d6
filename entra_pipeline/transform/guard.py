"""The deletion guard: how many contacts or list memberships one sync would remove, and whether
that is more than an operator allowed without looking. A directory sync is where people get lost
(a mis-scoped permission, a wrong exclusion), so a large removal waits for an explicit approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable

SAMPLE = 20


@dataclass(frozen=True)
class Removal:
    current: int
    removed: int
    sample: list
    over_limit: bool
    limit_text: str


def assess(current: Iterable[Hashable], new: Iterable[Hashable], max_removed: int | None,
           max_removed_percent: float | None, total: int | None = None) -> Removal:
    """What replacing ``current`` with ``new`` removes, against the limits (None: no limit).

    An incremental stage passes only the part that changes as ``current`` / ``new`` and the size
    of the whole as ``total``, which the percentage is taken of."""
    current_set, new_set = set(current), set(new)
    gone = sorted(current_set - new_set, key=str)
    return judge(len(current_set) if total is None else total, len(gone), gone[:SAMPLE], max_removed,
                 max_removed_percent)


def judge(size: int, removed: int, sample: list, max_removed: int | None,
          max_removed_percent: float | None) -> Removal:
    """The verdict on removing ``removed`` of ``size`` (counted elsewhere, e.g. in DuckDB;
    ``sample``: the first SAMPLE of them in order)."""
    over = []
    if max_removed is not None and removed > max_removed:
        over.append(f"more than {max_removed:,}")
    if max_removed_percent is not None and size and removed * 100 > max_removed_percent * size:
        over.append(f"more than {max_removed_percent:g} % of {size:,}")
    return Removal(size, removed, sample, bool(over), " and ".join(over))
