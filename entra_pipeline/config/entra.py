"""An Entra ID source: which tenant, how the pipeline signs in to Microsoft Graph, how it reads;
and which names an Entra ID integration may give its imported fields (Graph user properties)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from entra_pipeline.config.common import (ENV_NAME, ENV_NAME_MAX, DemoTenant, StrictModel, checked_path, https_url,
                                          shown)
from entra_pipeline.transform.fields import DIRECTORY_EXTENSION, ENTRA, is_valid_source_field

# Graph and identity-platform hosts per national cloud (Microsoft's national cloud deployments).
CLOUDS: dict[str, tuple[str, str]] = {
    "global": ("https://graph.microsoft.com", "https://login.microsoftonline.com"),
    "us_gov": ("https://graph.microsoft.us", "https://login.microsoftonline.us"),
    "us_gov_dod": ("https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    "china": ("https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
}

GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"

# Which source fields belong to which sign-in method (``source.auth``).
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "client_secret": ("client_secret_env",),
    "certificate": ("certificate_path", "private_key_path", "certificate_thumbprint", "private_key_password_env"),
    "delegated": ("token_cache_path",),
}


def check_directory_field(name: str) -> str:
    """``name`` as an Entra ID integration's imported field: a Graph user property, an extension
    attribute, a directory extension (extension_{appId}_{name}) or a manager field."""
    if name.startswith("extension_") and not DIRECTORY_EXTENSION.fullmatch(name):
        raise ValueError(f"bad custom field ID {shown(name)} (expected extension_{{appId without hyphens: 32 hex "
                         "digits}_{name}, as the directory shows it)")
    if not is_valid_source_field(name):
        raise ValueError(f"unknown directory field {shown(name)}")
    return name


class DirectoryFields:
    """For a section of an Entra ID integration: its imported fields are directory (Graph) fields."""

    source_kind: ClassVar[str] = ENTRA

    @classmethod
    def imported_name(cls, name: str) -> str:
        return check_directory_field(name)


class EntraSource(StrictModel):
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
    client_secret_env: str | None = Field(None, max_length=ENV_NAME_MAX, pattern=ENV_NAME)
    #: PEM certificate (it may also hold the private key); gives the thumbprint and the expiry.
    certificate_path: Path | None = Field(None, strict=False)
    #: PEM private key, when it is not in ``certificate_path``.
    private_key_path: Path | None = Field(None, strict=False)
    #: SHA-1 thumbprint as the admin center shows it, when there is no certificate file.
    certificate_thumbprint: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{40}$")
    private_key_password_env: str | None = Field(None, max_length=ENV_NAME_MAX, pattern=ENV_NAME)
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

    _check_urls = field_validator("graph_base_url", "authority_host")(https_url)
    _paths = field_validator("ca_bundle", "certificate_path", "private_key_path", "token_cache_path")(checked_path)

    @field_validator("client_id")
    @classmethod
    def _app_id(cls, value: str) -> str:
        if not re.fullmatch(GUID, value):
            raise ValueError(f"{shown(value)} is not an application (client) ID: a GUID, as the app "
                             "registration's overview shows it")
        return value

    @field_validator("tenant_id")
    @classmethod
    def _one_tenant(cls, value: str) -> str:
        # These let whoever signs in choose the tenant; an integration reads one directory.
        if value.lower() in ("common", "organizations", "consumers"):
            raise ValueError(f"{shown(value)} is not one tenant; give the tenant ID or its domain name")
        # It becomes part of the authority URL: a GUID or a DNS name, nothing else.
        domain = r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
        if not (re.fullmatch(GUID, value) or re.fullmatch(domain, value)):
            raise ValueError(f"{shown(value)} is not a tenant: give the tenant ID (a GUID) or one of its domain "
                             "names (contoso.onmicrosoft.com)")
        return value

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
