"""How an integration's people become contacts: the field mapping (imported field -> contact
field, custom fields) and the exclusion rules, in the condition language lists use as well.

The classes here are an Entra ID integration's sections (their imported fields are directory
fields); ``config.workday`` has the Workday flavour of each, whose imported fields are report columns.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from entra_pipeline.config.common import StrictModel, shown
from entra_pipeline.config.entra import DirectoryFields
from entra_pipeline.transform.fields import (BOOLEAN, BUILTIN_FIELDS, CUSTOM_FIELD_TYPES, DATE,
                                             EXTENSION_ATTRIBUTES, NUMBER, TEXT, default_mapping)

SKIP = "skip"
# Contact columns that are not fields: a custom field may not take these names.
RESERVED_COLUMNS = frozenset({"integration", "contact_id", "source_id", "imported", "run_id", "synced_at"})


class CustomField(StrictModel):
    """A contact field the configuration creates. ``format`` (Date only) reads non-ISO dates, e.g.
    ``%d/%m/%Y``; without it dates must be ISO 8601 (``2024-03-01`` or a Graph date-time). Whether
    DuckDB's strptime understands the format is checked when the file is loaded (config.loader)."""

    type: str = Field(max_length=64)
    format: str | None = Field(None, max_length=64)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in CUSTOM_FIELD_TYPES:
            raise ValueError(f"unknown type {shown(value)} (use Text, Number or Date)")
        return value

    @model_validator(mode="after")
    def _format_for_dates(self) -> CustomField:
        if self.format is not None and self.type != DATE:
            raise ValueError("format applies to Date fields only")
        return self

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data


class Mapping(DirectoryFields, StrictModel):
    """Imported (directory) fields -> contact fields, as the product's "Map fields" step.

    ``fields`` maps an imported field to a contact field, or to ``skip``; imported fields not named
    keep the automatic mapping, unless an explicit mapping takes their contact field.
    ``custom_fields`` creates new contact fields with a type. ``unique_id`` names the contact field
    that identifies a contact (default: email); it cannot be skipped. The 15 extension attributes
    must each be mapped or skipped; while some are undecided a WARN check lists them.
    """

    unique_id: str = Field("email", max_length=128)
    fields: dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=128)]] = Field(
        default_factory=dict, max_length=1000)
    custom_fields: dict[str, CustomField] = Field(default_factory=dict)

    @field_validator("custom_fields")
    @classmethod
    def _custom_names(cls, value: dict[str, CustomField]) -> dict[str, CustomField]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
                raise ValueError(f"custom field name {shown(name)} must be lower case letters, digits and _")
            if name in BUILTIN_FIELDS or name in RESERVED_COLUMNS:
                raise ValueError(f"custom field name {shown(name)} is taken by a built-in field")
        return value

    @field_validator("fields")
    @classmethod
    def _imported_names(cls, value: dict[str, str]) -> dict[str, str]:
        for imported in value:
            cls.imported_name(imported)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Mapping:
        known = self.field_types()
        targets: dict[str, list[str]] = {}
        for imported, target in self.fields.items():
            if target == SKIP:
                continue
            if target not in known:
                raise ValueError(f"fields.{imported}: unknown contact field {shown(target)} "
                                 "(a built-in field, a custom field, or skip)")
            targets.setdefault(target, []).append(imported)
        for target, sources in targets.items():
            if len(sources) > 1:
                raise ValueError(f"two imported fields map to contact field {shown(target)}: {', '.join(sources)}")
        if self.unique_id not in known:
            raise ValueError(f"unique_id: unknown contact field {shown(self.unique_id)}")
        if known[self.unique_id] == BOOLEAN:
            raise ValueError(f"unique_id: {shown(self.unique_id)} is a true/false field and cannot identify a contact")
        resolved = self.resolved()
        if resolved[self.unique_id] is None:
            raise ValueError(f"unique_id: the Unique Contact ID field {shown(self.unique_id)} cannot be skipped")
        unmapped = [n for n in self.custom_fields if resolved[n] is None]
        if unmapped:
            raise ValueError(f"custom field {shown(unmapped[0])} is not mapped from any imported field")
        return self

    def field_types(self) -> dict[str, str]:
        """Every contact field of this integration -> its type (Text, Number, Date, Boolean)."""
        return {**BUILTIN_FIELDS, **{n: f.type for n, f in self.custom_fields.items()}}

    def resolved(self) -> dict[str, str | None]:
        """Contact field -> the imported field feeding it (None: nothing feeds it)."""
        explicit = {target for target in self.fields.values() if target != SKIP}
        result: dict[str, str | None] = {name: None for name in self.field_types()}
        for imported, target in default_mapping(self.source_kind).items():
            if imported not in self.fields and target not in explicit:
                result[target] = imported
        for imported, target in self.fields.items():
            if target != SKIP:
                result[target] = imported
        return result

    def undecided_extension_attributes(self) -> list[str]:
        """The extension attributes neither mapped nor skipped: a WARN check lists them."""
        return [name for name in EXTENSION_ATTRIBUTES if name not in self.fields]


# YAML reads an unquoted 2024-03-01 as a date: fine for rules on Date contact fields.
ScalarValue = str | int | float | bool | date
OPERATORS = ("equals", "not_equals", "in", "not_in", "contains", "starts_with", "is_empty", "is_not_empty")


class Condition(DirectoryFields, StrictModel):
    """One test on an imported field (``field``) or a contact field (``contact_field``), or
    ``all``/``any`` of nested conditions. Text comparisons are case-sensitive."""

    field: str | None = Field(None, max_length=256)
    contact_field: str | None = Field(None, max_length=128)
    equals: ScalarValue | None = None
    not_equals: ScalarValue | None = None
    one_of: Annotated[list[ScalarValue], Field(min_length=1)] | None = Field(None, alias="in")
    not_in: Annotated[list[ScalarValue], Field(min_length=1)] | None = None
    contains: ScalarValue | None = None
    starts_with: str | None = Field(None, max_length=4096)
    is_empty: bool | None = None
    is_not_empty: bool | None = None
    all: Annotated[list[Condition], Field(min_length=1)] | None = None
    any: Annotated[list[Condition], Field(min_length=1)] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = {"name", "field", "contact_field", "all", "any", "one_of", *OPERATORS}
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise ValueError(f"unknown exclusion operator {shown(unknown[0])} (use {', '.join(OPERATORS)}, all, any)")
        groups = [k for k in ("all", "any") if k in data]
        ops = [k for k in (*OPERATORS, "one_of") if k in data]
        subjects = [k for k in ("field", "contact_field") if k in data]
        if groups:
            if len(groups) > 1 or ops or subjects:
                raise ValueError("a condition is either all/any of conditions or one test on one field")
            return data
        if len(subjects) != 1:
            raise ValueError("each condition names exactly one of field (imported) or contact_field")
        if len(ops) != 1:
            raise ValueError(f"each condition needs exactly one of {', '.join(OPERATORS)} (got {', '.join(ops) or 'none'})")
        if data[ops[0]] is None:
            raise ValueError(f"{ops[0]}: a value is needed (to match empty fields use is_empty: true)")
        if ops[0] in ("is_empty", "is_not_empty") and data[ops[0]] is not True:
            raise ValueError(f"{ops[0]} takes true")
        return data

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str | None) -> str | None:
        return cls.imported_name(value) if value is not None else None

    def imported_fields(self) -> set[str]:
        nested = [c for c in (self.all or self.any or [])]
        return ({self.field} if self.field else set()).union(*(c.imported_fields() for c in nested))

    def contact_fields(self) -> set[str]:
        nested = [c for c in (self.all or self.any or [])]
        return ({self.contact_field} if self.contact_field else set()).union(*(c.contact_fields() for c in nested))


def _value_problem(kind: str | None, value: Any) -> str | None:
    """Why ``value`` can never equal a field of type ``kind`` (None: it can, or any type goes)."""
    if kind is None:
        return None
    if kind == TEXT and not isinstance(value, str):
        return "is not text (quote it in YAML: 'NO', '00123' and 'on' are read as other types)"
    if kind == NUMBER and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "is not a number"
    if kind == DATE:
        if isinstance(value, date):
            return None
        try:
            date.fromisoformat(str(value))
        except ValueError:
            return "is not an ISO date (YYYY-MM-DD)"
    if kind == BOOLEAN and not isinstance(value, bool):
        return "is not true or false"
    return None


def check_values(condition: Condition, known: dict[str, str], where: str) -> None:
    """Rule values must be able to match their field: YAML reads NO as false and 00123 as 83.
    ``known`` is the integration's contact fields and their types; ``where`` names the rule."""
    for nested in (condition.all or condition.any or []):
        check_values(nested, known, where)
    if condition.field is not None:
        name = condition.field
        kind = None if name.startswith("extension_") else BOOLEAN if name == "accountEnabled" else TEXT
    elif condition.contact_field is not None:
        name, kind = condition.contact_field, known.get(condition.contact_field)
    else:
        return
    if (condition.contains is not None or condition.starts_with is not None) and kind not in (TEXT, None):
        raise ValueError(f"{where}: contains and starts_with apply to text, and {shown(name)} is {kind}")
    for op, values in (("equals", [condition.equals]), ("not_equals", [condition.not_equals]),
                       ("in", condition.one_of or []), ("not_in", condition.not_in or []),
                       ("contains", [condition.contains]), ("starts_with", [condition.starts_with])):
        for value in values:
            if value is None:
                continue
            problem = _value_problem(kind, value)
            if problem:
                raise ValueError(f"{where}: {op} value {shown(value)} for {shown(name)} ({kind}) {problem}")
            if condition.contact_field == "email" and isinstance(value, str) and value != value.lower():
                raise ValueError(f"{where}: {op} value {shown(value)}: emails are stored lower-case, so it never matches")


class ExclusionRule(Condition):
    """A named condition: a contact that matches it is not synced."""

    name: str = Field(min_length=1, max_length=256)


class Exclusions(StrictModel):
    """Who is not synced. For Entra ID, disabled accounts and guests are excluded unless switched
    off here; Workday has neither (exclude, say, Worker_Status Terminated with a rule)."""

    disabled_accounts: bool = True
    guests: bool = True
    rules: list[ExclusionRule] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _not_a_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            raise ValueError("exclusions takes disabled_accounts, guests and rules; put the list of rules under rules:")
        return data

    def all_rules(self) -> list[ExclusionRule]:
        """The built-in switches as rules (first), then the configured rules."""
        built_in = []
        if self.disabled_accounts:
            built_in.append(ExclusionRule(name="Disabled account", field="accountEnabled", equals=False))
        if self.guests:
            built_in.append(ExclusionRule(name="Guest", field="userType", equals="Guest"))
        return built_in + list(self.rules)
