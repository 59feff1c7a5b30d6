"""Directory users -> contacts, with the Unique Contact ID and per-record import errors.

A user becomes a contact when its Unique Contact ID (the mapped ``unique_id`` field, email by
default) is usable. Emails are trimmed, lower-cased and checked for shape; users without a usable
ID are import errors, not contacts. When several users produce the same ID, the one with the
smallest directory object id is kept (deterministic across runs) and every user involved is
reported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import BOOLEAN_CONTACT_FIELDS, flatten_user

STAGE = "mapped_contacts"

MISSING_UNIQUE_ID = "missing_unique_id"
INVALID_UNIQUE_ID = "invalid_unique_id"
DUPLICATE_UNIQUE_ID = "duplicate_unique_id"
INVALID_VALUE = "invalid_value"

# Deliberately loose: one @, no spaces, a dot in the domain. Mail servers are the final judge.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class MappingResult:
    contacts: list[dict[str, Any]] = field(default_factory=list)
    issues: list[ImportIssue] = field(default_factory=list)
    users_read: int = 0


def _text(value: Any) -> str | None:
    """A directory value as contact text. Graph collections (businessPhones, otherMails) feed a
    single field with their first non-empty entry; numbers and booleans keep their JSON spelling."""
    if isinstance(value, list):
        value = next((v for v in value if v not in (None, "")), None)
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return json.dumps(value, ensure_ascii=False)


def normalise_unique_id(field_name: str, value: Any) -> tuple[str | None, str | None]:
    """(id, problem code). Emails compare case-insensitively, so they are stored lower-cased."""
    if value is None or value == "":
        return None, MISSING_UNIQUE_ID
    text = str(value).strip()
    if not text:
        return None, MISSING_UNIQUE_ID
    if field_name == "email":
        text = text.lower()
        if not _EMAIL.match(text):
            return None, INVALID_UNIQUE_ID
    return text, None


def map_users(users: Iterable[dict], resolved_mapping: dict[str, str | None], unique_id: str) -> MappingResult:
    """Map Graph user objects to contacts.

    ``resolved_mapping`` is contact field -> imported field (None = skipped). Each contact carries
    ``contact_id``, ``source_id`` (the directory object id), every contact field, and
    ``imported`` (the imported fields as read, for exclusions and for analysts).
    """
    result = MappingResult()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for user in users:
        result.users_read += 1
        imported = flatten_user(user)
        contact: dict[str, Any] = {"source_id": user["id"]}
        value_issues: list[ImportIssue] = []
        for contact_field, source in resolved_mapping.items():
            value = imported.get(source) if source else None
            if contact_field not in BOOLEAN_CONTACT_FIELDS:
                contact[contact_field] = _text(value)
            elif value is None or isinstance(value, bool):
                contact[contact_field] = value
            else:
                contact[contact_field] = None
                value_issues.append(ImportIssue(
                    stage=STAGE, record=user["id"], field=contact_field, code=INVALID_VALUE,
                    message=f"user {imported.get('userPrincipalName') or user['id']}: {contact_field} takes "
                            f"true or false, but {source} is {value!r}; left empty"))
        if contact.get("email"):
            contact["email"] = str(contact["email"]).lower()
        contact["imported"] = imported
        raw_id = contact.get(unique_id)
        contact_id, problem = normalise_unique_id(unique_id, raw_id)
        if problem:
            who = imported.get("userPrincipalName") or user["id"]
            reason = "is empty" if problem == MISSING_UNIQUE_ID else f"is not a valid email address: {raw_id!r}"
            result.issues.append(
                ImportIssue(
                    stage=STAGE,
                    record=user["id"],
                    field=unique_id,
                    code=problem,
                    message=f"user {who}: Unique Contact ID field {unique_id!r} {reason}; not imported",
                )
            )
            continue
        # Value problems matter only for users who become contacts.
        result.issues.extend(value_issues)
        contact["contact_id"] = contact_id
        by_id.setdefault(contact_id, []).append(contact)

    for contact_id, candidates in by_id.items():
        candidates.sort(key=lambda c: c["source_id"])
        result.contacts.append(candidates[0])
        if len(candidates) > 1:
            ids = ", ".join(c["source_id"] for c in candidates)
            for candidate in candidates:
                result.issues.append(
                    ImportIssue(
                        stage=STAGE,
                        record=candidate["source_id"],
                        field=unique_id,
                        code=DUPLICATE_UNIQUE_ID,
                        message=(
                            f"{len(candidates)} users share Unique Contact ID {contact_id!r} ({ids}); "
                            f"kept {candidates[0]['source_id']} (smallest object id)"
                        ),
                    )
                )
    result.contacts.sort(key=lambda c: c["contact_id"])
    return result
