"""Import issues: per-record problems that do not fail a run but must be seen."""

from __future__ import annotations

from dataclasses import dataclass

#: A Workday report entry without the integration's id field (it is not imported).
MISSING_WORKER_ID = "missing_worker_id"
#: A Workday report entry repeating another entry's id (only the first is imported).
DUPLICATE_WORKER_ID = "duplicate_worker_id"


@dataclass(frozen=True)
class ImportIssue:
    """One row of the ``import_errors`` table.

    ``stage`` is the asset that found it, ``record`` the directory object id (or the configured
    name) it concerns, ``field`` the contact field or config field, ``code`` a stable error class.
    """

    stage: str
    record: str
    field: str | None
    code: str
    message: str
