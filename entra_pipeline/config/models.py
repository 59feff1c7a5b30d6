"""An integration (one directory synced into the warehouse, one Dagster partition) and the file
that lists them.

An integration is an ``EntraIntegration`` or a ``WorkdayIntegration``, told apart by its
``source.type`` (Entra ID when not given): the two differ in their source and in what their
mapping, rules and lists may name as imported fields (directory fields or report columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from croniter import croniter
from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticKnownError
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from entra_pipeline.config import lists, rules, workday
from entra_pipeline.config.common import ConfigError, StrictModel, shown, shown_path
from entra_pipeline.config.directory import ContactsDirectory
from entra_pipeline.config.entra import EntraSource
from entra_pipeline.config.workday import WorkdaySource
from entra_pipeline.transform.fields import ENTRA, EXTENSION_ATTRIBUTES, SOURCE_KINDS, WORKDAY


class Schedule(StrictModel):
    """When the integration syncs on its own. Runs are also started by hand from the UI."""

    cron: str = Field("0 6 * * *", max_length=200)
    timezone: str = Field("UTC", max_length=64)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        # Dagster schedules take five-field cron strings; croniter also accepts six, so count.
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {shown(value)} (expected five fields, e.g. '0 6 * * *')")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {shown(value)}") from None
        return value


class DeletionGuard(StrictModel):
    """How much one sync may remove before it stops and waits for an operator: contacts, and list
    memberships, each checked on its own. Exceeding either limit blocks (null switches one off)."""

    max_removed: int | None = Field(500, ge=0, le=100_000_000)
    max_removed_percent: float | None = Field(10.0, ge=0, le=100)


class IntegrationBase(StrictModel):
    """What every integration has; ``key`` is its Dagster partition key. Only its two kinds below
    are ever validated: each gives ``source``, ``mapping``, ``exclusions`` and
    ``distribution_lists`` the types of its source."""

    # Also the schedule name's suffix, and Dagster names allow only letters, digits and _.
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    title: str = Field(min_length=1, max_length=256)
    source: EntraSource | WorkdaySource
    schedule: Schedule = Field(default_factory=Schedule)
    mapping: rules.Mapping = Field(default_factory=rules.Mapping)
    exclusions: rules.Exclusions = Field(default_factory=rules.Exclusions)
    distribution_lists: lists.ListSelection = Field(default_factory=lists.ListSelection)
    deletion_guard: DeletionGuard = Field(default_factory=DeletionGuard)

    @property
    def kind(self) -> str:
        """The source type: "entra" or "workday"."""
        return self.source.type

    @model_validator(mode="after")
    def _rules_use_known_fields(self) -> IntegrationBase:
        known = self.mapping.field_types()
        conditions = [(f"exclusions.rules.{i} ({shown(r.name)})", r) for i, r in enumerate(self.exclusions.rules)]
        conditions += [(f"distribution_lists.custom.{i} ({shown(c.name)})", c.when)
                       for i, c in enumerate(self.distribution_lists.custom)]
        for where, condition in conditions:
            for name in sorted(condition.contact_fields()):
                if name not in known:
                    raise ValueError(f"{where}: unknown contact field {shown(name)}")
            rules.check_values(condition, known, where)
        for i, generated in enumerate(self.distribution_lists.generated):
            if generated.contact_field is not None and generated.contact_field not in known:
                raise ValueError(f"distribution_lists.generated.{i}: unknown contact field {shown(generated.contact_field)}")
        return self

    def tested_fields(self) -> set[str]:
        """The imported fields that decide who is excluded or on which list: without them a rule
        or list condition matches nobody, silently."""
        fields = set().union(*(r.imported_fields() for r in self.exclusions.all_rules()),
                             *(c.when.imported_fields() for c in self.distribution_lists.custom))
        return fields | {g.field for g in self.distribution_lists.generated if g.field}

    def imported_fields(self) -> set[str]:
        """The imported fields a sync must read: what the mapping feeds from and what the rules
        and lists test (each kind adds what it needs besides)."""
        return {source for source in self.mapping.resolved().values() if source} | self.tested_fields()

    @property
    def login_command(self) -> str:
        return f"python -m entra_pipeline login {self.key}"


class EntraIntegration(IntegrationBase):
    """An integration that reads an Entra ID tenant through Microsoft Graph."""

    source: EntraSource
    mapping: rules.Mapping = Field(default_factory=rules.Mapping)
    exclusions: rules.Exclusions = Field(default_factory=rules.Exclusions)
    distribution_lists: lists.ListSelection = Field(default_factory=lists.ListSelection)

    @field_validator("source", mode="before")
    @classmethod
    def _known_source_type(cls, data: Any) -> Any:
        # Every source whose type is not workday lands here (Entra ID is the default). One that is
        # not a mapping, or names an unknown type, gets the words of a choice between both types.
        if not isinstance(data, (dict, EntraSource)):
            raise PydanticKnownError("model_attributes_type")
        if isinstance(data, dict) and "type" in data and data["type"] not in SOURCE_KINDS:
            raise PydanticKnownError("union_tag_invalid", {
                "discriminator": "'type'", "tag": str(data["type"]),
                "expected_tags": ", ".join(repr(kind) for kind in SOURCE_KINDS)})
        return data

    def imported_fields(self) -> set[str]:
        """Also the user principal name (it names users in error messages), and, while any
        extension attribute is undecided, the extension attributes (to count who carries a value)."""
        fields = super().imported_fields() | {"userPrincipalName"}
        if self.mapping.undecided_extension_attributes():
            fields.update(EXTENSION_ATTRIBUTES)
        return fields


class WorkdayIntegration(IntegrationBase):
    """An integration that reads a Workday custom report of workers."""

    source: WorkdaySource
    mapping: workday.Mapping = Field(default_factory=workday.Mapping)
    exclusions: workday.Exclusions = Field(default_factory=workday.Exclusions)
    distribution_lists: workday.ListSelection = Field(default_factory=workday.ListSelection)

    def imported_fields(self) -> set[str]:
        """Also the column that identifies a worker."""
        return super().imported_fields() | {self.source.id_field}


def source_type(data: Any) -> str:
    """Which kind of integration ``data`` from the file is: its ``source.type``, Entra ID unless
    it says workday (an unknown type is reported by the Entra ID integration's source)."""
    source = data.get("source") if isinstance(data, dict) else None
    return WORKDAY if isinstance(source, dict) and source.get("type") == WORKDAY else ENTRA


def _a_mapping(data: Any) -> Any:
    # What pydantic says of an integration that is not a mapping, whichever kind it would be.
    if not isinstance(data, (dict, IntegrationBase)):
        raise PydanticKnownError("model_type", {"class_name": "Integration"})
    return data


#: One integration of the file, of either kind.
Integration = Annotated[
    Union[Annotated[EntraIntegration, Tag(ENTRA)], Annotated[WorkdayIntegration, Tag(WORKDAY)]],
    Discriminator(source_type), BeforeValidator(_a_mapping),
]


class RunSettings(StrictModel):
    """How Dagster retries a Graph read that failed for a passing reason (throttled or unavailable
    after the client's own retries, a dropped connection): ``step_retries`` more attempts of the
    step, ``step_retry_delay_seconds`` apart, doubling. Configuration and authentication errors
    are never retried."""

    step_retries: int = Field(2, ge=0, le=10)
    step_retry_delay_seconds: float = Field(60.0, ge=0, le=3600)


class IntegrationsFile(StrictModel):
    """The integrations file: every integration, and how Dagster retries their runs."""

    integrations: list[Integration] = Field(min_length=1, max_length=1000)
    runs: RunSettings = Field(default_factory=RunSettings)
    contacts_directory: ContactsDirectory = Field(default_factory=ContactsDirectory)

    @field_validator("integrations")
    @classmethod
    def _unique_keys(cls, value: list[EntraIntegration | WorkdayIntegration]) -> list[EntraIntegration | WorkdayIntegration]:
        seen: set[str] = set()
        types: dict[str, tuple[str, str]] = {}
        caches: dict[Path, str] = {}
        for integration in value:
            if integration.key in seen:
                raise ValueError(f"duplicate integration key {shown(integration.key)}")
            seen.add(integration.key)
            # One sign-in per cache: a login for one integration would replace the other's.
            cache = getattr(integration.source, "token_cache_path", None)
            if cache is not None:
                other = caches.setdefault(cache.resolve(), integration.key)
                if other != integration.key:
                    raise ValueError(f"integrations {shown(other)} and {shown(integration.key)} share the token cache "
                                     f"{shown_path(cache)}; give each its own token_cache_path")
            # Custom fields are columns of the shared contacts table: one name, one type.
            for name, custom in integration.mapping.custom_fields.items():
                other = types.setdefault(name, (custom.type, integration.key))
                if other[0] != custom.type:
                    raise ValueError(f"custom field {shown(name)} is {custom.type} in integration {shown(integration.key)} "
                                     f"but {other[0]} in integration {shown(other[1])}; one name, one type")
        return value

    @model_validator(mode="after")
    def _directory_names_known(self, info: ValidationInfo) -> "IntegrationsFile":
        # Validated with its broken integrations left out (isolation), the file still names them.
        named = set((info.context or {}).get("named_keys") or self.keys)
        fields = {name for i in self.integrations for name in i.mapping.field_types()}
        # A custom field of a broken integration is not known here: its fields are not judged then.
        problems = self.contacts_directory.problems(named, fields if named == set(self.keys) else None)
        if problems:
            raise ValueError(problems[0])
        return self

    def get(self, key: str) -> EntraIntegration | WorkdayIntegration:
        for integration in self.integrations:
            if integration.key == key:
                return integration
        raise ConfigError(f"no integration with key {shown(key)} in the integrations file")

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.integrations]
