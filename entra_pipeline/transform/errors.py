"""Import issues: per-record problems that do not fail a run but must be seen."""

from __future__ import annotations

from dataclasses import dataclass


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
