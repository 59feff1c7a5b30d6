"""The integrations file: which directories to sync, how, and when.

One YAML file (default ``data/integrations.yaml``, or the path in ``ENTRA_PIPELINE_CONFIG``) lists
the integrations. Each integration is one Dagster partition. The file is validated with pydantic
when it is loaded; any problem is reported as one line per problem, naming the file, the
integration and the field, and nothing runs on an invalid file.

Secrets are never in this file: an integration names the environment variable that holds its
client secret (``source.client_secret_env``) or its private key's password
(``source.private_key_password_env``); key, certificate and token cache are files named by path.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
import re
import unicodedata
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
import idna
import yaml
from croniter import croniter
from cryptography import x509
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidatorFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from entra_pipeline.errors import PipelineError
from entra_pipeline.files import (MAX_PEM_FILE_BYTES, MAX_TEXT_FILE_BYTES, FileProblem, check_regular_file,
                                  read_file_limited)
from entra_pipeline.sources.graph.auth import Certificate, ClientSecret, Credential, DelegatedSignIn
from entra_pipeline.sources.graph.certificates import CertificateError, CertificateInfo, load_certificate_credential
from entra_pipeline.transform.lists import custom_list_id
from entra_pipeline.transform.fields import (
    BOOLEAN,
    BUILTIN_FIELDS,
    CUSTOM_FIELD_TYPES,
    DATE,
    DEFAULT_MAPPING,
    NUMBER,
    TEXT,
    DIRECTORY_EXTENSION,
    EXTENSION_ATTRIBUTES,
    SOURCE_KINDS,
    WORKDAY,
    WORKDAY_ALIAS,
    default_mapping,
    is_valid_source_field,
)
from entra_pipeline.sources.workday.client import BasicAuth, RefreshTokenAuth

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "data" / "integrations.yaml"
CONFIG_PATH_ENV = "ENTRA_PIPELINE_CONFIG"

# Graph and identity-platform hosts per national cloud (Microsoft's national cloud deployments).
CLOUDS: dict[str, tuple[str, str]] = {
    "global": ("https://graph.microsoft.com", "https://login.microsoftonline.com"),
    "us_gov": ("https://graph.microsoft.us", "https://login.microsoftonline.us"),
    "us_gov_dod": ("https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    "china": ("https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
}

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_NAME_MAX = 128
_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"

MAX_PATH_CHARS = 1024
MAX_URL_CHARS = 512
# Error messages show at most this many characters of a value from the file.
SHOWN_CHARS = 80
SHOWN_PATH_CHARS = 240
_MAX_ERROR_LINE = 2000


class ConfigError(PipelineError, ValueError):
    """The integrations file is invalid; the message is one line per problem."""


class _Strict(BaseModel):
    # strict: YAML reads yes/no/on/off as true/false, and "5" is text; neither is taken as a number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _shown(value: Any) -> str:
    """``value`` as an error message shows it: its repr, cut to about SHOWN_CHARS characters."""
    if isinstance(value, Path):
        value = str(value)
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:SHOWN_CHARS - 1]}…{size}"


def _shown_path(path: Path | str) -> str:
    """A file's path as an error message shows it: whole unless absurdly long, then its start and
    its end (the file's name)."""
    text = str(path)
    if len(text) > SHOWN_PATH_CHARS:
        text = f"{text[:SHOWN_CHARS]}…{text[-SHOWN_CHARS:]}"
    return repr(text)


def _script(char: str) -> str:
    """The writing system of a letter as Unicode names it (LATIN, CYRILLIC, GREEK, CJK...)."""
    return unicodedata.name(char, "UNKNOWN").split()[0]


def _mixed_scripts(label: str) -> tuple[str, str] | None:
    """(a letter of another script, the label's first script) when the label's letters come from
    more than one writing system, the way look-alike host names are made; None otherwise."""
    scripts: dict[str, str] = {}
    for char in label:
        if char.isalpha():
            scripts.setdefault(_script(char), char)
    # Letters that look alike across scripts are Latin, Cyrillic and Greek; Japanese names, say,
    # mix Han and kana legitimately.
    if len(scripts) < 2 or not scripts.keys() & {"LATIN", "CYRILLIC", "GREEK"}:
        return None
    first = "LATIN" if "LATIN" in scripts else next(iter(scripts))
    odd = next(char for script, char in scripts.items() if script != first)
    return odd, first


def _character(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')})"


def _check_host(host: str) -> None:
    """An ASCII host name, IPv4 address or [IPv6] literal. An internationalised name is given in
    its punycode form (xn--...), and none may mix writing systems: a Cyrillic 'о' in 'micrоsoft'
    looks like the real host and is another."""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1] if host.endswith("]") else "!")
        except ValueError:
            raise ValueError(f"host {_shown(host)} is not a valid [IPv6] address") from None
        return
    if not host.isascii():
        char = next(c for c in host if not c.isascii())
        mixed = next((m for m in map(_mixed_scripts, host.split(".")) if m), None)
        if mixed:
            raise ValueError(f"host {_shown(host)} has the non-ASCII character {_character(mixed[0])} among "
                             f"{mixed[1].title()} letters (a look-alike of another host?); host names must be ASCII")
        try:
            ascii_host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise ValueError(f"host {_shown(host)} has the non-ASCII character {_character(char)} and is not a "
                             "valid internationalised name; host names must be ASCII") from None
        raise ValueError(f"host {_shown(host)} has the non-ASCII character {_character(char)}; give the name "
                         f"in its ASCII (punycode) form, {ascii_host!r}")
    labels = host.split(".")
    label_shape = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    if len(host) > 253 or not all(re.fullmatch(label_shape, label) for label in labels):
        raise ValueError(f"host {_shown(host)} is not a valid host name (letters, digits, - and . in labels of at "
                         "most 63 characters)")
    for label in labels:
        if label.lower().startswith("xn--"):
            try:
                decoded = idna.decode(label)
            except idna.IDNAError:
                raise ValueError(f"host {_shown(host)}: {label!r} is not valid punycode") from None
            mixed = _mixed_scripts(decoded)
            if mixed:
                raise ValueError(f"host {_shown(host)}: {label!r} stands for {decoded!r}, whose character "
                                 f"{_character(mixed[0])} mixes writing systems (a look-alike of another "
                                 "host?); host names must not mix scripts")


def _https_url(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"a URL of {len(value):,} characters; at most {MAX_URL_CHARS}")
    # No user info either: "https://login.microsoftonline.com@evil.example" is a host of evil.example.
    match = re.fullmatch(r"https://([^/\s?#@]+)(/[^\s?#@]*)?", value)
    if not match:
        raise ValueError(f"must be an https:// URL without query or user name, got {_shown(value)}")
    authority, path = match.groups()
    host, port = authority, None
    port_match = re.fullmatch(r"(.*?):([0-9]*)", authority)
    if port_match and not authority.endswith("]"):
        host, port = port_match.groups()
    _check_host(host)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {_shown(value)} (1 to 65535)")
    if path and not (path.isascii() and path.isprintable()):
        raise ValueError(f"the path of {_shown(value)} is not printable ASCII (percent-encode it)")
    return value.rstrip("/")


class DemoTenant(_Strict):
    """Start the built-in Graph emulator with a generated directory instead of a real tenant."""

    users: int = Field(2000, ge=1, le=1_000_000)
    groups: int = Field(150, ge=1, le=100_000)
    seed: int = Field(7, ge=0, le=2**31 - 1)


# Which source fields belong to which sign-in method (``source.auth``).
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "client_secret": ("client_secret_env",),
    "certificate": ("certificate_path", "private_key_path", "certificate_thumbprint", "private_key_password_env"),
    "delegated": ("token_cache_path",),
}


def _plain_path(value: Path | str) -> Path:
    text = str(value)
    if len(text) > MAX_PATH_CHARS:
        raise ValueError(f"a path of {len(text):,} characters; at most {MAX_PATH_CHARS}")
    if not text.isprintable():
        raise ValueError(f"path {_shown(text)} has a control character")
    return Path(value)


def _relative_to_file(value: Path | None, info: ValidationInfo) -> Path | None:
    # A relative path is relative to the integrations file, not to wherever Dagster runs.
    base = (info.context or {}).get("base_dir")
    if value is not None:
        value = _plain_path(value)
    if value is not None and not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


def _checked_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """A path field, relative to the integrations file: an existing regular file of sane size,
    except the token cache, which the login command creates. A CA bundle must hold PEM
    certificates: a wrong file would otherwise surface only as a TLS error on the first sync."""
    value = _relative_to_file(value, info)
    if value is None:
        return None
    what = "CA bundle file" if info.field_name == "ca_bundle" else "file"
    try:
        if info.field_name == "token_cache_path":
            if os.path.lexists(value):
                check_regular_file(value, MAX_TEXT_FILE_BYTES)
        elif info.field_name == "ca_bundle":
            _check_pem_certificates(read_file_limited(value, MAX_PEM_FILE_BYTES))
        else:
            check_regular_file(value, MAX_PEM_FILE_BYTES)
    except FileProblem as exc:
        if info.field_name == "token_cache_path" and str(exc).startswith("is a directory"):
            raise ValueError(f"{_shown_path(value)} is a directory; name the token cache file") from None
        raise ValueError(f"{what} {_shown_path(value)} {exc}") from None
    return value


def _check_pem_certificates(data: bytes) -> None:
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise FileProblem("holds no PEM certificate (-----BEGIN CERTIFICATE-----); it must be the CA "
                           "certificates to trust, in PEM") from None


class EntraSource(_Strict):
    """Where and how to reach one Entra ID tenant through Microsoft Graph.

    ``auth`` is how the pipeline signs in: ``client_secret`` or ``certificate`` for an app
    registration with the application permission Directory.Read.All, or ``delegated`` for a
    service account that signed in once with ``python -m entra_pipeline login KEY`` (delegated
    Directory.Read.All; the refresh token lives in ``token_cache_path``, mode 0600)."""

    type: Literal["entra"] = "entra"
    tenant_id: str = Field(min_length=1, max_length=253)
    #: The application (client) ID of the app registration: a GUID.
    client_id: str = Field(min_length=1, max_length=36)
    auth: Literal["client_secret", "certificate", "delegated"] = "client_secret"
    client_secret_env: str | None = Field(None, max_length=_ENV_NAME_MAX, pattern=_ENV_NAME)
    #: PEM certificate (it may also hold the private key); gives the thumbprint and the expiry.
    certificate_path: Path | None = Field(None, strict=False)
    #: PEM private key, when it is not in ``certificate_path``.
    private_key_path: Path | None = Field(None, strict=False)
    #: SHA-1 thumbprint as the admin center shows it, when there is no certificate file.
    certificate_thumbprint: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{40}$")
    private_key_password_env: str | None = Field(None, max_length=_ENV_NAME_MAX, pattern=_ENV_NAME)
    token_cache_path: Path | None = Field(None, strict=False)
    cloud: Literal["global", "us_gov", "us_gov_dod", "china"] = "global"
    graph_base_url: str | None = None
    authority_host: str | None = None
    ca_bundle: Path | None = Field(None, strict=False)
    demo_tenant: DemoTenant | None = None
    page_size: int = Field(999, ge=1, le=999)
    timeout_seconds: float = Field(60.0, gt=0, le=600)
    max_retries: int = Field(6, ge=0, le=20)
    max_retry_after_seconds: float = Field(120.0, gt=0, le=3600)
    parallel_requests: int = Field(4, ge=1, le=16)
    #: How the raw assets read the tenant: "delta" (Graph delta queries: a full round the first
    #: time, then only changes) or "list" (every sync reads everything; for tenants without change
    #: tracking, such as Azure AD B2C and External ID tenants).
    read: Literal["delta", "list"] = "delta"
    #: With delta, a full round at least this often, because delta can miss changes in edge cases
    #: (null: only when asked for or when Graph expires the delta token).
    full_sync_every_days: float | None = Field(7.0, gt=0, le=366)

    _check_urls = field_validator("graph_base_url", "authority_host")(_https_url)

    @field_validator("client_id")
    @classmethod
    def _app_id(cls, value: str) -> str:
        if not re.fullmatch(_GUID, value):
            raise ValueError(f"{_shown(value)} is not an application (client) ID: a GUID, as the app "
                             "registration's overview shows it")
        return value

    @field_validator("tenant_id")
    @classmethod
    def _one_tenant(cls, value: str) -> str:
        # These let whoever signs in choose the tenant; an integration reads one directory.
        if value.lower() in ("common", "organizations", "consumers"):
            raise ValueError(f"{_shown(value)} is not one tenant; give the tenant ID or its domain name")
        # It becomes part of the authority URL: a GUID or a DNS name, nothing else.
        domain = r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
        if not (re.fullmatch(_GUID, value) or re.fullmatch(domain, value)):
            raise ValueError(f"{_shown(value)} is not a tenant: give the tenant ID (a GUID) or one of its domain "
                             "names (contoso.onmicrosoft.com)")
        return value

    _paths = field_validator("ca_bundle", "certificate_path", "private_key_path", "token_cache_path")(_checked_path)

    @model_validator(mode="after")
    def _auth_fields(self) -> EntraSource:
        for method, names in AUTH_FIELDS.items():
            if method != self.auth:
                for name in names:
                    if getattr(self, name) is not None:
                        raise ValueError(f"{name} is for auth: {method}, but this integration has auth: {self.auth}")
        if self.auth == "client_secret" and self.client_secret_env is None:
            raise ValueError("auth: client_secret needs client_secret_env, the environment variable holding the secret")
        if self.auth == "certificate" and self.certificate_path is None and (
                self.private_key_path is None or self.certificate_thumbprint is None):
            raise ValueError("auth: certificate needs certificate_path (PEM certificate, and the key unless "
                             "private_key_path is given), or private_key_path with certificate_thumbprint")
        if self.auth == "delegated" and self.token_cache_path is None:
            raise ValueError("auth: delegated needs token_cache_path, the file that keeps the sign-in (mode 0600)")
        if self.demo_tenant is not None and self.auth != "client_secret":
            raise ValueError("the demo tenant signs in with a client secret (auth: client_secret)")
        return self

    @property
    def graph_url(self) -> str:
        return self.graph_base_url or CLOUDS[self.cloud][0]

    @property
    def authority_url(self) -> str:
        return self.authority_host or CLOUDS[self.cloud][1]


WORKDAY_AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password_env"),
    "oauth_refresh": ("client_id", "client_secret_env", "refresh_token_env"),
}


class WorkdaySource(_Strict):
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
    password_env: str | None = Field(None, max_length=_ENV_NAME_MAX, pattern=_ENV_NAME)
    client_id: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z0-9_=.-]+$")
    client_secret_env: str | None = Field(None, max_length=_ENV_NAME_MAX, pattern=_ENV_NAME)
    refresh_token_env: str | None = Field(None, max_length=_ENV_NAME_MAX, pattern=_ENV_NAME)
    id_field: str = Field("Employee_ID", max_length=128, pattern=WORKDAY_ALIAS.pattern)
    ca_bundle: Path | None = Field(None, strict=False)
    demo_tenant: DemoTenant | None = None
    timeout_seconds: float = Field(600.0, gt=0, le=3600)
    max_retries: int = Field(4, ge=0, le=20)

    _check_host = field_validator("host")(_https_url)
    _ca = field_validator("ca_bundle")(_checked_path)

    @field_validator("prompts")
    @classmethod
    def _prompt_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            # Prompts are query parameters; "Name!WID" refers to an object by its id.
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(![A-Za-z_]+)?", name) or name == "format":
                raise ValueError(f"bad prompt name {_shown(name)} (the prompt's name as the report defines it)")
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



class Schedule(_Strict):
    """When the integration syncs on its own. Runs are also started by hand from the UI."""

    cron: str = Field("0 6 * * *", max_length=200)
    timezone: str = Field("UTC", max_length=64)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        # Dagster schedules take five-field cron strings; croniter also accepts six, so count.
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {_shown(value)} (expected five fields, e.g. '0 6 * * *')")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {_shown(value)}") from None
        return value


SKIP = "skip"
# Contact columns that are not fields: a custom field may not take these names.
RESERVED_COLUMNS = frozenset({"integration", "contact_id", "source_id", "imported", "run_id", "synced_at"})


# Which source the integration being validated reads: its imported fields are Graph properties
# (entra) or report column aliases (workday). Set around each integration's validation.
_SOURCE_KIND: ContextVar[str] = ContextVar("source_kind", default="entra")


def _check_imported(name: str) -> str:
    if _SOURCE_KIND.get() == WORKDAY:
        if not WORKDAY_ALIAS.fullmatch(name):
            raise ValueError(f"bad report column {_shown(name)} (a Workday column alias: letters, digits and _)")
        return name
    if name.startswith("extension_") and not DIRECTORY_EXTENSION.fullmatch(name):
        raise ValueError(f"bad custom field ID {_shown(name)} (expected extension_{{appId without hyphens: 32 hex "
                         "digits}_{name}, as the directory shows it)")
    if not is_valid_source_field(name):
        raise ValueError(f"unknown directory field {_shown(name)}")
    return name


class CustomField(_Strict):
    """A contact field the configuration creates. ``format`` (Date only) reads non-ISO dates, e.g.
    ``%d/%m/%Y``; without it dates must be ISO 8601 (``2024-03-01`` or a Graph date-time)."""

    type: str = Field(max_length=64)
    format: str | None = Field(None, max_length=64)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in CUSTOM_FIELD_TYPES:
            raise ValueError(f"unknown type {_shown(value)} (use Text, Number or Date)")
        return value

    @model_validator(mode="after")
    def _format_for_dates(self) -> CustomField:
        if self.format is not None and self.type != DATE:
            raise ValueError("format applies to Date fields only")
        if self.format is not None:
            # The mapping parses with DuckDB's strptime: ask it whether it understands the format.
            try:
                duckdb.connect().execute("SELECT try_strptime('2000-01-01', ?)", [self.format])
            except duckdb.Error as exc:
                reason = str(exc).splitlines()[0].split(": ", 1)[-1]
                raise ValueError(f"format {_shown(self.format)} is not a valid date format ({reason})") from None
        return self

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data


class Mapping(_Strict):
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
    _kind: str = PrivateAttr(default="entra")  # the source: its default mapping and extension attributes

    @field_validator("custom_fields")
    @classmethod
    def _custom_names(cls, value: dict[str, CustomField]) -> dict[str, CustomField]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
                raise ValueError(f"custom field name {_shown(name)} must be lower case letters, digits and _")
            if name in BUILTIN_FIELDS or name in RESERVED_COLUMNS:
                raise ValueError(f"custom field name {_shown(name)} is taken by a built-in field")
        return value

    @field_validator("fields")
    @classmethod
    def _imported_names(cls, value: dict[str, str]) -> dict[str, str]:
        for imported in value:
            _check_imported(imported)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Mapping:
        self._kind = _SOURCE_KIND.get()
        known = {**BUILTIN_FIELDS, **{n: f.type for n, f in self.custom_fields.items()}}
        targets: dict[str, list[str]] = {}
        for imported, target in self.fields.items():
            if target == SKIP:
                continue
            if target not in known:
                raise ValueError(f"fields.{imported}: unknown contact field {_shown(target)} "
                                 "(a built-in field, a custom field, or skip)")
            targets.setdefault(target, []).append(imported)
        for target, sources in targets.items():
            if len(sources) > 1:
                raise ValueError(f"two imported fields map to contact field {_shown(target)}: {', '.join(sources)}")
        if self.unique_id not in known:
            raise ValueError(f"unique_id: unknown contact field {_shown(self.unique_id)}")
        if known[self.unique_id] == BOOLEAN:
            raise ValueError(f"unique_id: {_shown(self.unique_id)} is a true/false field and cannot identify a contact")
        resolved = self.resolved()
        if resolved[self.unique_id] is None:
            raise ValueError(f"unique_id: the Unique Contact ID field {_shown(self.unique_id)} cannot be skipped")
        unmapped = [n for n in self.custom_fields if resolved[n] is None]
        if unmapped:
            raise ValueError(f"custom field {_shown(unmapped[0])} is not mapped from any imported field")
        return self

    def field_types(self) -> dict[str, str]:
        """Every contact field of this integration -> its type (Text, Number, Date, Boolean)."""
        return {**BUILTIN_FIELDS, **{n: f.type for n, f in self.custom_fields.items()}}

    def resolved(self) -> dict[str, str | None]:
        """Contact field -> the imported field feeding it (None: nothing feeds it)."""
        explicit = {target for target in self.fields.values() if target != SKIP}
        result: dict[str, str | None] = {name: None for name in self.field_types()}
        for imported, target in default_mapping(self._kind).items():
            if imported not in self.fields and target not in explicit:
                result[target] = imported
        for imported, target in self.fields.items():
            if target != SKIP:
                result[target] = imported
        return result

    def undecided_extension_attributes(self) -> list[str]:
        if self._kind == WORKDAY:
            return []
        return [name for name in EXTENSION_ATTRIBUTES if name not in self.fields]


# YAML reads an unquoted 2024-03-01 as a date: fine for rules on Date contact fields.
ScalarValue = str | int | float | bool | date
_OPERATORS = ("equals", "not_equals", "in", "not_in", "contains", "starts_with", "is_empty", "is_not_empty")


class Condition(_Strict):
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
        allowed = {"name", "field", "contact_field", "all", "any", "one_of", *_OPERATORS}
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise ValueError(f"unknown exclusion operator {_shown(unknown[0])} (use {', '.join(_OPERATORS)}, all, any)")
        groups = [k for k in ("all", "any") if k in data]
        ops = [k for k in (*_OPERATORS, "one_of") if k in data]
        subjects = [k for k in ("field", "contact_field") if k in data]
        if groups:
            if len(groups) > 1 or ops or subjects:
                raise ValueError("a condition is either all/any of conditions or one test on one field")
            return data
        if len(subjects) != 1:
            raise ValueError("each condition names exactly one of field (imported) or contact_field")
        if len(ops) != 1:
            raise ValueError(f"each condition needs exactly one of {', '.join(_OPERATORS)} (got {', '.join(ops) or 'none'})")
        if data[ops[0]] is None:
            raise ValueError(f"{ops[0]}: a value is needed (to match empty fields use is_empty: true)")
        if ops[0] in ("is_empty", "is_not_empty") and data[ops[0]] is not True:
            raise ValueError(f"{ops[0]} takes true")
        return data

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str | None) -> str | None:
        return _check_imported(value) if value is not None else None

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


def _check_values(condition: Condition, known: dict[str, str], where: str) -> None:
    """Rule values must be able to match their field: YAML reads NO as false and 00123 as 83."""
    for nested in (condition.all or condition.any or []):
        _check_values(nested, known, where)
    if condition.field is not None:
        name = condition.field
        kind = None if name.startswith("extension_") else BOOLEAN if name == "accountEnabled" else TEXT
    elif condition.contact_field is not None:
        name, kind = condition.contact_field, known.get(condition.contact_field)
    else:
        return
    if (condition.contains is not None or condition.starts_with is not None) and kind not in (TEXT, None):
        raise ValueError(f"{where}: contains and starts_with apply to text, and {_shown(name)} is {kind}")
    for op, values in (("equals", [condition.equals]), ("not_equals", [condition.not_equals]),
                       ("in", condition.one_of or []), ("not_in", condition.not_in or []),
                       ("contains", [condition.contains]), ("starts_with", [condition.starts_with])):
        for value in values:
            if value is None:
                continue
            problem = _value_problem(kind, value)
            if problem:
                raise ValueError(f"{where}: {op} value {_shown(value)} for {_shown(name)} ({kind}) {problem}")
            if condition.contact_field == "email" and isinstance(value, str) and value != value.lower():
                raise ValueError(f"{where}: {op} value {_shown(value)}: emails are stored lower-case, so it never matches")


class ExclusionRule(Condition):
    """A named condition: a contact that matches it is not synced."""

    name: str = Field(min_length=1, max_length=256)


class Exclusions(_Strict):
    """Who is not synced. For Entra ID, disabled accounts and guests are excluded unless switched
    off here; Workday has neither (exclude, say, Worker_Status Terminated with a rule)."""

    disabled_accounts: bool = True
    guests: bool = True
    rules: list[ExclusionRule] = Field(default_factory=list, max_length=1000)
    _kind: str = PrivateAttr(default="entra")

    @model_validator(mode="after")
    def _remember_source(self) -> Exclusions:
        self._kind = _SOURCE_KIND.get()
        return self

    @model_validator(mode="before")
    @classmethod
    def _not_a_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            raise ValueError("exclusions takes disabled_accounts, guests and rules; put the list of rules under rules:")
        return data

    def all_rules(self) -> list[ExclusionRule]:
        """The built-in switches as rules (first), then the configured rules."""
        built_in = []
        if self._kind == WORKDAY:
            return list(self.rules)
        if self.disabled_accounts:
            built_in.append(ExclusionRule(name="Disabled account", field="accountEnabled", equals=False))
        if self.guests:
            built_in.append(ExclusionRule(name="Guest", field="userType", equals="Guest"))
        return built_in + list(self.rules)


BULK_SELECTOR_MAX_LINES = 100_000
_HEADER_WORDS = {"displayname", "name", "names", "groupname", "group", "groups", "listname", "list", "lists",
                 "distributionlist", "distributionlists", "title"}


def read_bulk_selector(path: Path, header_check: bool = True) -> list[str]:
    """Display names from a bulk selector file: one per line, no header row, UTF-8 (a BOM is fine),
    blank lines and surrounding spaces ignored. Names containing commas are quoted, as in any CSV."""
    where = f"bulk selector file {_shown_path(path)}"
    try:
        raw = read_file_limited(_plain_path(path), MAX_TEXT_FILE_BYTES)
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
                raise ValueError(f"{where} line {line} looks like a header row ({_shown(name)}); the file takes "
                                 "display names only, with no header (a group really named so: set "
                                 "csv_header_check: false)")
            names.append(name)
    except csv.Error as exc:
        reason = "an unclosed quote runs to the end of the file" if "unexpected end of data" in str(exc) else exc
        raise ValueError(f"{where} line {reader.line_num}: {reason}") from None
    if not names:
        raise ValueError(f"{where} has no display names")
    return names


class CustomList(_Strict):
    """A list of the synced contacts that meet a condition (the exclusion rule language)."""

    name: str = Field(min_length=1, max_length=256)
    when: Condition


class GeneratedLists(_Strict):
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
        return _check_imported(value) if value is not None else None

    @model_validator(mode="after")
    def _one_field(self) -> GeneratedLists:
        if (self.field is None) == (self.contact_field is None):
            raise ValueError("generated lists name exactly one of field (imported) or contact_field")
        if "{value}" not in self.name or re.search(r"\{(?!value\})", self.name):
            raise ValueError(f"name {_shown(self.name)} must contain {{value}} and no other {{...}}")
        return self

    @property
    def source(self) -> str:
        return self.field or self.contact_field


class ListSelection(_Strict):
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
            path = _plain_path(data["csv"])
            base = (info.context or {}).get("base_dir")
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
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
                raise ValueError(f"custom lists {_shown(seen[list_id])} and {_shown(custom.name)} would share the id {_shown(list_id)}; "
                                 "rename one")
            seen[list_id] = custom.name
        sources = [g.source for g in self.generated]
        repeated = sorted({name for name in sources if sources.count(name) > 1})
        if repeated:
            raise ValueError(f"generated lists from {_shown(repeated[0])} are defined twice; one definition per field")
        return self


class DeletionGuard(_Strict):
    """How much one sync may remove before it stops and waits for an operator: contacts, and list
    memberships, each checked on its own. Exceeding either limit blocks (null switches one off)."""

    max_removed: int | None = Field(500, ge=0, le=100_000_000)
    max_removed_percent: float | None = Field(10.0, ge=0, le=100)


class Integration(_Strict):
    """One directory synced into the warehouse; ``key`` is its Dagster partition key."""

    # Also the schedule name's suffix, and Dagster names allow only letters, digits and _.
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    title: str = Field(min_length=1, max_length=256)
    source: Annotated[EntraSource | WorkdaySource, Field(discriminator="type")]
    schedule: Schedule = Field(default_factory=Schedule)
    mapping: Mapping = Field(default_factory=Mapping)
    exclusions: Exclusions = Field(default_factory=Exclusions)
    distribution_lists: ListSelection = Field(default_factory=ListSelection)
    deletion_guard: DeletionGuard = Field(default_factory=DeletionGuard)

    @model_validator(mode="wrap")
    @classmethod
    def _per_source(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Integration:
        """Entra ID is the default source type; the fields a mapping or rule may name are the
        source type's (see _check_imported)."""
        kind = "entra"
        if isinstance(data, dict) and isinstance(data.get("source"), dict):
            if "type" not in data["source"]:
                data = {**data, "source": {**data["source"], "type": "entra"}}
            kind = data["source"]["type"] if data["source"]["type"] in SOURCE_KINDS else "entra"
        token = _SOURCE_KIND.set(kind)
        try:
            return handler(data)
        finally:
            _SOURCE_KIND.reset(token)

    @property
    def kind(self) -> str:
        """The source type: "entra" or "workday"."""
        return self.source.type

    @model_validator(mode="after")
    def _rules_use_known_fields(self) -> Integration:
        known = self.mapping.field_types()
        conditions = [(f"exclusions.rules.{i} ({_shown(r.name)})", r) for i, r in enumerate(self.exclusions.rules)]
        conditions += [(f"distribution_lists.custom.{i} ({_shown(c.name)})", c.when)
                       for i, c in enumerate(self.distribution_lists.custom)]
        for where, condition in conditions:
            for name in sorted(condition.contact_fields()):
                if name not in known:
                    raise ValueError(f"{where}: unknown contact field {_shown(name)}")
            _check_values(condition, known, where)
        for i, generated in enumerate(self.distribution_lists.generated):
            if generated.contact_field is not None and generated.contact_field not in known:
                raise ValueError(f"distribution_lists.generated.{i}: unknown contact field {_shown(generated.contact_field)}")
        return self

    def tested_fields(self) -> set[str]:
        """The imported fields that decide who is excluded or on which list: without them a rule
        or list condition matches nobody, silently."""
        fields = set().union(*(r.imported_fields() for r in self.exclusions.all_rules()),
                             *(c.when.imported_fields() for c in self.distribution_lists.custom))
        return fields | {g.field for g in self.distribution_lists.generated if g.field}

    def imported_fields(self) -> set[str]:
        """The imported fields a sync must read: what the mapping feeds from, what the rules and
        lists test, the worker id (Workday) or the user principal name (it names users in error
        messages), and, while any extension attribute is undecided, the extension attributes (to
        count who carries a value)."""
        fields = {source for source in self.mapping.resolved().values() if source} | self.tested_fields()
        if self.kind == WORKDAY:
            return fields | {self.source.id_field}
        fields.add("userPrincipalName")
        if self.mapping.undecided_extension_attributes():
            fields.update(EXTENSION_ATTRIBUTES)
        return fields

    @property
    def login_command(self) -> str:
        return f"python -m entra_pipeline login {self.key}"

    def _env(self, field: str) -> str:
        name = getattr(self.source, field)
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"integration {_shown(self.key)}: environment variable {name} (source.{field}) is not set")
        return value

    def client_secret(self) -> str:
        """The client secret from the environment; raises ConfigError naming the variable."""
        return self._env("client_secret_env")

    def credential(self) -> Credential:
        """How this integration signs in, with its secret or key loaded; ConfigError naming the
        integration, the field and the file or variable when it cannot be."""
        source = self.source
        if source.auth == "client_secret":
            return ClientSecret(self.client_secret())
        if source.auth == "delegated":
            return DelegatedSignIn(cache_path=source.token_cache_path, login_command=self.login_command)
        return self.certificate()[0]

    def workday_auth(self) -> BasicAuth | RefreshTokenAuth:
        """A Workday integration's sign-in with its secrets from the environment."""
        source = self.source
        if source.auth == "basic":
            return BasicAuth(source.username, self._env("password_env"))
        return RefreshTokenAuth(source.client_id, self._env("client_secret_env"), self._env("refresh_token_env"))

    def certificate(self) -> tuple[Certificate, CertificateInfo | None]:
        """The certificate credential and the certificate's details (None with only a thumbprint)."""
        source = self.source
        passphrase = self._env("private_key_password_env") if source.private_key_password_env else None
        try:
            return load_certificate_credential(
                certificate_path=source.certificate_path, private_key_path=source.private_key_path,
                thumbprint=source.certificate_thumbprint, passphrase=passphrase,
            )
        except CertificateError as exc:
            raise ConfigError(f"integration {_shown(self.key)}, field {_shown(exc.field)}: {exc}") from None


class RunSettings(_Strict):
    """How Dagster retries a Graph read that failed for a passing reason (throttled or unavailable
    after the client's own retries, a dropped connection): ``step_retries`` more attempts of the
    step, ``step_retry_delay_seconds`` apart, doubling. Configuration and authentication errors
    are never retried."""

    step_retries: int = Field(2, ge=0, le=10)
    step_retry_delay_seconds: float = Field(60.0, ge=0, le=3600)


class IntegrationsFile(_Strict):
    integrations: list[Integration] = Field(min_length=1, max_length=1000)
    runs: RunSettings = Field(default_factory=RunSettings)

    @field_validator("integrations")
    @classmethod
    def _unique_keys(cls, value: list[Integration]) -> list[Integration]:
        seen: set[str] = set()
        types: dict[str, tuple[str, str]] = {}
        caches: dict[Path, str] = {}
        for integration in value:
            if integration.key in seen:
                raise ValueError(f"duplicate integration key {_shown(integration.key)}")
            seen.add(integration.key)
            # One sign-in per cache: a login for one integration would replace the other's.
            cache = getattr(integration.source, "token_cache_path", None)
            if cache is not None:
                other = caches.setdefault(cache.resolve(), integration.key)
                if other != integration.key:
                    raise ValueError(f"integrations {_shown(other)} and {_shown(integration.key)} share the token cache "
                                     f"{_shown_path(cache)}; give each its own token_cache_path")
            # Custom fields are columns of the shared contacts table: one name, one type.
            for name, custom in integration.mapping.custom_fields.items():
                other = types.setdefault(name, (custom.type, integration.key))
                if other[0] != custom.type:
                    raise ValueError(f"custom field {_shown(name)} is {custom.type} in integration {_shown(integration.key)} "
                                     f"but {other[0]} in integration {_shown(other[1])}; one name, one type")
        return value

    def get(self, key: str) -> Integration:
        for integration in self.integrations:
            if integration.key == key:
                return integration
        raise ConfigError(f"no integration with key {_shown(key)} in the integrations file")

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.integrations]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_shown(key)}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def _describe_location(raw: Any, loc: tuple) -> str:
    """'integration 'demo', field 'schedule.cron'' from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "integrations" and isinstance(loc[1], int):
        index = loc[1]
        key = None
        try:
            key = raw["integrations"][index].get("key")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        who = f"integration {_shown(key)}" if key else f"integrations[{index}]"
        # A part may be a key from the file (an unknown field's name): cut it short.
        parts = [str(p) if len(str(p)) < SHOWN_CHARS else f"{str(p)[:SHOWN_CHARS - 1]}…"
                 for p in loc[2:] if not str(p).startswith("function-")]
        if parts[:1] == ["source"] and parts[1:2] and parts[1] in SOURCE_KINDS:
            del parts[1]  # pydantic names the source type it tried; the file does not say it
        rest = ".".join(parts)
        return f"{who}, field {rest!r}" if rest else who
    return f"field {_shown('.'.join(str(p) for p in loc))}" if loc else "top level"


_TYPE_NAMES = {"int_type": "a whole number", "float_type": "a number", "bool_type": "true or false",
               "string_type": "text"}


def _type_problem(expected: str, value: Any) -> str:
    """'expected a whole number, got ...' for a value of the wrong type; strict, so say why."""
    if isinstance(value, bool):
        got = f"{str(value).lower()} (YAML reads yes, no, on and off as true and false)"
    elif isinstance(value, str):
        got = f"the text {_shown(value)}" + (" (write it without quotes)" if expected != "text" else "")
    elif isinstance(value, (int, float)):
        got = f"the number {_shown(value)}" + (" (quote it)" if expected == "text" else "")
    else:
        got = f"a {type(value).__name__}"
    return f"expected {expected}, got {got}"


# A file is a few thousand values; aliases can make a small file stand for billions of them.
MAX_YAML_NODES = 2_000_000
MAX_YAML_DEPTH = 64


def _check_shape(raw: Any, source: str) -> None:
    """Refuse YAML nested too deeply or expanding (through aliases) to too many values."""
    stack, count = [(raw, 1)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{source}: more than {MAX_YAML_NODES:,} values (counting each use of a YAML alias)")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def parse_integrations(text: str, source: str = "<string>", base_dir: Path | None = None) -> IntegrationsFile:
    """Parse and validate the integrations file's text; ConfigError with one line per problem."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}:{where}: invalid YAML: {problem[:200]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested more than {MAX_YAML_DEPTH} levels deep") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with an 'integrations' list")
    _check_shape(raw, source)
    try:
        return IntegrationsFile.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] in _TYPE_NAMES:
                msg = _type_problem(_TYPE_NAMES[err["type"]], err.get("input"))
            line = f"{source}: {_describe_location(raw, tuple(err['loc']))}: {msg}"
            # Every value shown is cut short already; this bounds what pydantic's own messages hold.
            lines.append(line if len(line) <= _MAX_ERROR_LINE else f"{line[:_MAX_ERROR_LINE - 1]}…")
        raise ConfigError("\n".join(lines)) from None


def load_integrations(path: Path | str | None = None) -> IntegrationsFile:
    """Load and validate the integrations file (``path``, ``$ENTRA_PIPELINE_CONFIG`` or default)."""
    file = Path(path) if path is not None else config_path()
    if len(str(file)) > MAX_PATH_CHARS or not str(file).isprintable():
        raise ConfigError(f"integrations file path {_shown(str(file))} is not a usable path (set {CONFIG_PATH_ENV})")
    try:
        raw = read_file_limited(file, MAX_TEXT_FILE_BYTES)
    except FileProblem as exc:
        if str(exc) == "does not exist":
            raise ConfigError(f"{file}: integrations file not found (set {CONFIG_PATH_ENV})") from None
        raise ConfigError(f"{file}: the integrations file {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_integrations(text, str(file), file.resolve().parent)
