"""Coercing directory values to contact field types: Text, Number, Date, Boolean.

Each coercion returns ``(value, None)`` or ``(None, reason)``; the reason ends up in an
``import_errors`` row and the field is left empty for that contact.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime
from typing import Any, Callable

from entra_pipeline.transform.fields import BOOLEAN, DATE, NUMBER, TEXT

Coerced = tuple[Any, str | None]

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def first(value: Any) -> Any:
    """Graph collections (businessPhones, otherMails) feed one contact field: first non-empty entry."""
    if isinstance(value, list):
        return next((v for v in value if v not in (None, "")), None)
    return value


def to_text(value: Any) -> Coerced:
    value = first(value)
    if value is None:
        return None, None
    if isinstance(value, str):
        return value.strip() or None, None
    # Numbers and booleans (directory extensions can be Integer or Boolean) keep their JSON spelling.
    return json.dumps(value, ensure_ascii=False), None


def to_number(value: Any) -> Coerced:
    value = first(value)
    if value is None or value == "":
        return None, None
    if isinstance(value, bool):
        return None, "a true/false value is not a number"
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value.strip())
    else:
        return None, "not a number (digits with an optional sign, '.' decimal point and exponent)"
    if not math.isfinite(number):
        return None, "number out of range"
    return number, None


def to_date(value: Any, fmt: str | None = None) -> Coerced:
    value = first(value)
    if value is None or value == "":
        return None, None
    if not isinstance(value, str):
        return None, "not a date"
    text = value.strip()
    try:
        if fmt:
            return datetime.strptime(text, fmt).date(), None
        if _ISO_DATE.match(text):
            return date.fromisoformat(text), None
        if _ISO_DATETIME.match(text):
            # The calendar date as written: shifting it to UTC could move a hire date by a day.
            return datetime.fromisoformat(text).date(), None
    except ValueError as exc:
        return None, f"not a valid date ({exc})"
    expected = f"the format {fmt!r}" if fmt else "ISO 8601 (YYYY-MM-DD); set a format for other layouts"
    return None, f"not a date in {expected}"


def to_boolean(value: Any) -> Coerced:
    value = first(value)
    if value is None or isinstance(value, bool):
        return value, None
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true", None
    return None, "takes true or false"


def coercer(field_type: str, fmt: str | None = None) -> Callable[[Any], Coerced]:
    if field_type == DATE:
        return lambda value: to_date(value, fmt)
    return {TEXT: to_text, NUMBER: to_number, BOOLEAN: to_boolean}[field_type]
