"""What an operator can ask of one run, as plain values (the Dagster run config maps onto them)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncOptions:
    """``allow_removals`` approves, for this run only, removing more contacts or list memberships
    than the integration's deletion guard allows."""

    allow_removals: bool = False


@dataclass(frozen=True)
class RawReadOptions:
    """``full_resync`` reads everything this run (a full delta round) instead of the changes since
    the last sync, and reports what the full read corrected."""

    full_resync: bool = False
