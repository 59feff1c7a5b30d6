"""Which distribution lists an integration keeps: directory groups chosen by id, by name or by a
bulk selector file of display names, custom lists (a condition over the contacts) and generated
lists (one per value of a field).

The classes here are an Entra ID integration's sections; ``config.workday`` has the Workday flavours.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from entra_pipeline.config.common import StrictModel, plain_path, relative_to_file, shown, shown_path
from entra_pipeline.config.entra import DirectoryFields
from entra_pipeline.config.rules import Condition
from entra_pipeline.files import MAX_TEXT_FILE_BYTES, FileProblem, read_file_limited
from entra_pipeline.transform.lists import custom_list_id

BULK_SELECTOR_MAX_LINES = 100_000
_HEADER_WORDS = {"displayname", "name", "names", "groupname", "group", "groups", "listname", "list", "lists",
                 "distributionlist", "distributionlists", "title"}


def read_bulk_selector(path: Path, header_check: bool = True) -> list[str]:
    """Display names from a bulk selector file: one per line, no header row, UTF-8 (a BOM is fine),
    blank lines and surrounding spaces ignored. Names containing commas are quoted, as in any CSV."""
    where = f"bulk selector file {shown_path(path)}"
    try:
        raw = read_file_limited(plain_path(path), MAX_TEXT_FILE_BYTES)
    except FileProblem as exc:
        raise ValueError(f"{where} {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{where} line {line}: not UTF-8 text (save it as UTF-8)") from None
    names: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            line = reader.line_num
            if line > BULK_SELECTOR_MAX_LINES:
                raise ValueError(f"{where} has more than {BULK_SELECTOR_MAX_LINES:,} lines")
            # A stray byte-order mark (files concatenated by hand) is not part of a name.
            cells = [c for c in (cell.replace("\ufeff", "").strip() for cell in row) if c]
            if not cells:
                continue
            if len(cells) > 1:
                raise ValueError(f"{where} line {line}: {len(cells)} columns; one display name per line "
                                 "(quote names that contain commas)")
            name = cells[0]
            if any(ch in name for ch in "\r\n\0"):
                raise ValueError(f"{where} line {line}: a name spans several lines (an unclosed quote?)")
            if len(name) > 256:
                raise ValueError(f"{where} line {line}: a name of {len(name):,} characters; Entra display "
                                 "names have at most 256")
            if header_check and not names and re.sub(r"[\s_-]", "", name.lower()) in _HEADER_WORDS:
                raise ValueError(f"{where} line {line} looks like a header row ({shown(name)}); the file takes "
                                 "display names only, with no header (a group really named so: set "
                                 "csv_header_check: false)")
            names.append(name)
    except csv.Error as exc:
        reason = "an unclosed quote runs to the end of the file" if "unexpected end of data" in str(exc) else exc
        raise ValueError(f"{where} line {reader.line_num}: {reason}") from None
    if not names:
        raise ValueError(f"{where} has no display names")
    return names


class CustomList(StrictModel):
    """A list of the synced contacts that meet a condition (the exclusion rule language)."""

    name: str = Field(min_length=1, max_length=256)
    when: Condition


class GeneratedLists(DirectoryFields, StrictModel):
    """One list per distinct value of a field among the synced contacts (one per supervisory
    organization, per location, ...), kept in step on every sync: a new value gets its list, a
    value nobody has any more loses it (and no_list_removed says so). ``field`` is an imported
    field (a report column for Workday), ``contact_field`` a contact field; ``name`` the list's
    display name, ``{value}`` standing for the value."""

    field: str | None = Field(None, max_length=256)
    contact_field: str | None = Field(None, max_length=128)
    name: str = Field("{value}", max_length=256)

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str | None) -> str | None:
        return cls.imported_name(value) if value is not None else None

    @model_validator(mode="after")
    def _one_field(self) -> GeneratedLists:
        if (self.field is None) == (self.contact_field is None):
            raise ValueError("generated lists name exactly one of field (imported) or contact_field")
        if "{value}" not in self.name or re.search(r"\{(?!value\})", self.name):
            raise ValueError(f"name {shown(self.name)} must contain {{value}} and no other {{...}}")
        return self

    @property
    def source(self) -> str:
        return self.field or self.contact_field


class ListSelection(StrictModel):
    """Which directory groups become distribution lists, and which custom lists are built.

    ``select``: ``all`` offered groups (Microsoft 365, mail-enabled security and distribution
    groups), ``none``, those named by ``ids`` or ``names``, or the display names in the bulk
    selector file ``csv`` (one per line, no header; relative to the integrations file).
    """

    select: Literal["all", "none", "ids", "names", "csv"] = "none"
    ids: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=BULK_SELECTOR_MAX_LINES)
    names: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=BULK_SELECTOR_MAX_LINES)
    csv: Path | None = Field(None, strict=False)
    csv_header_check: bool = True
    custom: list[CustomList] = Field(default_factory=list, max_length=1000)
    generated: list[GeneratedLists] = Field(default_factory=list, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _read_csv(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("csv") is not None:
            if data.get("names"):
                raise ValueError("give names or csv, not both")
            if not isinstance(data["csv"], str):
                raise ValueError("csv: expected the path of the bulk selector file")
            path = relative_to_file(data["csv"], info)
            data = {**data, "csv": path, "names": read_bulk_selector(path, data.get("csv_header_check", True))}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ListSelection:
        if self.select == "ids" and not self.ids:
            raise ValueError("select: ids needs a non-empty 'ids' list")
        if self.select == "names" and (not self.names or self.csv is not None):
            raise ValueError("select: names needs a non-empty 'names' list")
        if self.select == "csv" and self.csv is None:
            raise ValueError("select: csv needs a 'csv' file of display names")
        if self.select in ("all", "none") and (self.ids or self.names or self.csv):
            raise ValueError(f"select: {self.select} takes no 'ids', 'names' or 'csv'")
        seen: dict[str, str] = {}
        for custom in self.custom:
            list_id = custom_list_id(custom.name)
            if list_id in seen:
                raise ValueError(f"custom lists {shown(seen[list_id])} and {shown(custom.name)} would share the id "
                                 f"{shown(list_id)}; rename one")
            seen[list_id] = custom.name
        sources = [g.source for g in self.generated]
        repeated = sorted({name for name in sources if sources.count(name) > 1})
        if repeated:
            raise ValueError(f"generated lists from {shown(repeated[0])} are defined twice; one definition per field")
        return self
