"""Directory users -> contacts, with the Unique Contact ID and per-record import errors.

A user becomes a contact when its Unique Contact ID (the mapped ``unique_id`` field, email by
default) is usable. Emails are trimmed, lower-cased and checked for shape; users without a usable
ID are import errors, not contacts. When several users produce the same ID, the one with the
smallest directory object id is kept (deterministic across runs) and every user involved is
reported.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.transform.fields import EXTENSION_ATTRIBUTES, flatten_user
from entra_pipeline.transform.types import Coerced, coercer

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
    # extension attribute -> how many directory users carry a value in it
    extension_values: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class FieldPlan:
    """How one contact field is filled: from which imported field, coerced how."""

    contact_field: str
    source: str | None
    field_type: str
    coerce: Callable[[Any], Coerced]


def plan_for(mapping) -> list[FieldPlan]:
    """The field plan of a ``config.Mapping``: every contact field, in column order."""
    types = mapping.field_types()
    formats = {name: f.format for name, f in mapping.custom_fields.items()}
    return [FieldPlan(name, source, types[name], coercer(types[name], formats.get(name)))
            for name, source in mapping.resolved().items()]


def normalise_unique_id(field_name: str, value: Any) -> tuple[str | None, str | None]:
    """(id, problem code). Emails compare case-insensitively, so they are stored lower-cased."""
    if value is None or value == "":
        return None, MISSING_UNIQUE_ID
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a Number field as ID: 1234, not 1234.0
    text = str(value).strip()
    if not text:
        return None, MISSING_UNIQUE_ID
    if field_name == "email":
        text = text.lower()
        if not _EMAIL.match(text):
            return None, INVALID_UNIQUE_ID
    return text, None


def map_users(users: Iterable[dict], plan: list[FieldPlan], unique_id: str) -> MappingResult:
    """Map Graph user objects to contacts.

    Each contact carries ``contact_id``, ``source_id`` (the directory object id), every contact
    field of the plan, and ``imported`` (the imported fields as read, for exclusions and for
    analysts). A value that does not fit its field's type is an ``invalid_value`` issue and the
    field stays empty; the contact is still imported.
    """
    result = MappingResult()
    by_id: dict[str, list[dict[str, Any]]] = {}
    id_plan = next(p for p in plan if p.contact_field == unique_id)
    for user in users:
        result.users_read += 1
        imported = flatten_user(user)
        for name in EXTENSION_ATTRIBUTES:
            if imported.get(name) not in (None, ""):
                result.extension_values[name] += 1
        raw_id = imported.get(id_plan.source)
        value, _ = id_plan.coerce(raw_id)
        contact_id, problem = normalise_unique_id(unique_id, value)
        if problem:
            who = imported.get("userPrincipalName") or user["id"]
            reason = "is empty" if problem == MISSING_UNIQUE_ID else f"is not a valid email address: {raw_id!r}"
            result.issues.append(ImportIssue(
                stage=STAGE, record=user["id"], field=unique_id, code=problem,
                message=f"user {who}: Unique Contact ID field {unique_id!r} {reason}; not imported"))
            continue
        contact: dict[str, Any] = {"contact_id": contact_id, "source_id": user["id"]}
        for field_plan in plan:
            raw = imported.get(field_plan.source) if field_plan.source else None
            value, reason = field_plan.coerce(raw)
            contact[field_plan.contact_field] = value
            if reason:
                result.issues.append(ImportIssue(
                    stage=STAGE, record=user["id"], field=field_plan.contact_field, code=INVALID_VALUE,
                    message=f"contact {contact_id}: {field_plan.contact_field} ({field_plan.field_type}) cannot take "
                            f"{raw!r} from {field_plan.source}: {reason}; left empty"))
        if contact.get("email"):
            contact["email"] = contact["email"].lower()
        contact["imported"] = imported
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
