"""A Workday source: the custom report (RaaS) read on every sync and how the pipeline signs in;
and the Workday flavour of each section of an integration, whose imported fields are the
report's column aliases. Each flavour keeps its section's name (``workday.Mapping`` is a Workday
integration's ``mapping``), so the file's error lines name the section the same way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from entra_pipeline.config import lists, rules
from entra_pipeline.config.common import (ENV_NAME, ENV_NAME_MAX, DemoTenant, StrictModel, checked_path, https_url,
                                          shown)
from entra_pipeline.transform.fields import WORKDAY, WORKDAY_ALIAS

WORKDAY_AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password_env"),
    "oauth_refresh": ("client_id", "client_secret_env", "refresh_token_env"),
}


def check_report_column(name: str) -> str:
    """``name`` as a Workday integration's imported field: a report column alias."""
    if not WORKDAY_ALIAS.fullmatch(name):
        raise ValueError(f"bad report column {shown(name)} (a Workday column alias: letters, digits and _)")
    return name


class ReportColumns:
    """For a section of a Workday integration: its imported fields are report column aliases."""

    source_kind: ClassVar[str] = WORKDAY

    @classmethod
    def imported_name(cls, name: str) -> str:
        return check_report_column(name)


class WorkdaySource(StrictModel):
    """Where and how to read one Workday tenant: a custom report of workers enabled as a web
    service (Report-as-a-Service), read whole on every sync (RaaS has no change tracking).

    ``auth: basic`` signs in as an Integration System User (``username``, password in the
    variable ``password_env``); ``auth: oauth_refresh`` as an API client (``client_id``, secret and
    refresh token in ``client_secret_env`` and ``refresh_token_env``). ``id_field`` is the column
    that identifies a worker from one sync to the next (its value is the contact's source id)."""

    type: Literal["workday"]
    host: str | None = None  # not with demo_tenant: the demo tenant's own address is used
    tenant: str = Field(max_length=128, pattern=r"^[A-Za-z0-9_]+$")
    report_owner: str = Field(max_length=256, pattern=r"^[A-Za-z0-9_.@-]+$")
    report_name: str = Field(max_length=256, pattern=r"^[A-Za-z0-9_]+$")
    prompts: dict[str, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict, max_length=100)
    auth: Literal["basic", "oauth_refresh"] = "basic"
    username: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z0-9_.@-]+$")
    password_env: str | None = Field(None, max_length=ENV_NAME_MAX, pattern=ENV_NAME)
    client_id: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z0-9_=.-]+$")
    client_secret_env: str | None = Field(None, max_length=ENV_NAME_MAX, pattern=ENV_NAME)
    refresh_token_env: str | None = Field(None, max_length=ENV_NAME_MAX, pattern=ENV_NAME)
    id_field: str = Field("Employee_ID", max_length=128, pattern=WORKDAY_ALIAS.pattern)
    ca_bundle: Path | None = Field(None, strict=False)
    demo_tenant: DemoTenant | None = None
    timeout_seconds: float = Field(600.0, gt=0, le=3600)
    max_retries: int = Field(4, ge=0, le=20)

    _check_host = field_validator("host")(https_url)
    _ca = field_validator("ca_bundle")(checked_path)

    @field_validator("prompts")
    @classmethod
    def _prompt_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            # Prompts are query parameters; "Name!WID" refers to an object by its id.
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(![A-Za-z_]+)?", name) or name == "format":
                raise ValueError(f"bad prompt name {shown(name)} (the prompt's name as the report defines it)")
        return value

    @model_validator(mode="after")
    def _auth_fields(self) -> WorkdaySource:
        if (self.host is None) == (self.demo_tenant is None):
            raise ValueError("give host (https://...workday.com) or demo_tenant, one of them")
        for method, names in WORKDAY_AUTH_FIELDS.items():
            for name in names:
                if method != self.auth and getattr(self, name) is not None:
                    raise ValueError(f"{name} is for auth: {method}, but this integration has auth: {self.auth}")
                if method == self.auth and getattr(self, name) is None:
                    raise ValueError(f"auth: {method} needs {', '.join(names)}")
        return self


class Mapping(ReportColumns, rules.Mapping):
    """A Workday integration's mapping: report columns -> contact fields (see rules.Mapping)."""

    def undecided_extension_attributes(self) -> list[str]:
        return []  # a report has no extension attributes


class Condition(ReportColumns, rules.Condition):
    """A condition on report columns or contact fields (see rules.Condition)."""

    all: Annotated[list[Condition], Field(min_length=1)] | None = None
    any: Annotated[list[Condition], Field(min_length=1)] | None = None


class ExclusionRule(Condition):
    """A named condition: a worker that matches it is not synced."""

    name: str = Field(min_length=1, max_length=256)


class Exclusions(rules.Exclusions):
    """Who is not synced: only the configured rules (a report has no disabled accounts or guests)."""

    rules: list[ExclusionRule] = Field(default_factory=list, max_length=1000)

    def all_rules(self) -> list[ExclusionRule]:
        return list(self.rules)


class CustomList(lists.CustomList):
    when: Condition


class GeneratedLists(ReportColumns, lists.GeneratedLists):
    """One list per value of a report column or contact field (see lists.GeneratedLists)."""


class ListSelection(lists.ListSelection):
    custom: list[CustomList] = Field(default_factory=list, max_length=1000)
    generated: list[GeneratedLists] = Field(default_factory=list, max_length=100)
