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
           max_removed_percent: float | None) -> Removal:
    """What replacing ``current`` with ``new`` removes, against the limits (None: no limit)."""
    current_set, new_set = set(current), set(new)
    gone = sorted(current_set - new_set, key=str)
    over = []
    if max_removed is not None and len(gone) > max_removed:
        over.append(f"more than {max_removed:,}")
    if max_removed_percent is not None and current_set and len(gone) * 100 > max_removed_percent * len(current_set):
        over.append(f"more than {max_removed_percent:g} % of {len(current_set):,}")
    return Removal(len(current_set), len(gone), gone[:SAMPLE], bool(over), " and ".join(over))
