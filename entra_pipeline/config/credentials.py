"""How an integration signs in: its secrets read from the environment and its key and certificate
from their files, as the source clients take them. The only part of the configuration that knows
the clients; ConfigError names the integration, the field and the variable or file."""

from __future__ import annotations

import os

from entra_pipeline.config.common import ConfigError, shown
from entra_pipeline.config.models import EntraIntegration, IntegrationBase, WorkdayIntegration
from entra_pipeline.sources.graph.auth import Certificate, ClientSecret, Credential, DelegatedSignIn
from entra_pipeline.sources.graph.certificates import CertificateError, CertificateInfo, load_certificate_credential
from entra_pipeline.sources.workday.client import BasicAuth, RefreshTokenAuth


def _env(integration: IntegrationBase, field: str) -> str:
    name = getattr(integration.source, field)
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"integration {shown(integration.key)}: environment variable {name} (source.{field}) is not set")
    return value


def client_secret(integration: EntraIntegration) -> str:
    """The client secret from the environment; raises ConfigError naming the variable."""
    return _env(integration, "client_secret_env")


def credential(integration: EntraIntegration) -> Credential:
    """How an Entra ID integration signs in, with its secret or key loaded; ConfigError naming the
    integration, the field and the file or variable when it cannot be."""
    source = integration.source
    if source.auth == "client_secret":
        return ClientSecret(client_secret(integration))
    if source.auth == "delegated":
        return DelegatedSignIn(cache_path=source.token_cache_path, login_command=integration.login_command)
    return certificate(integration)[0]


def certificate(integration: EntraIntegration) -> tuple[Certificate, CertificateInfo | None]:
    """The certificate credential and the certificate's details (None with only a thumbprint)."""
    source = integration.source
    passphrase = _env(integration, "private_key_password_env") if source.private_key_password_env else None
    try:
        return load_certificate_credential(
            certificate_path=source.certificate_path, private_key_path=source.private_key_path,
            thumbprint=source.certificate_thumbprint, passphrase=passphrase,
        )
    except CertificateError as exc:
        raise ConfigError(f"integration {shown(integration.key)}, field {shown(exc.field)}: {exc}") from None


def workday_auth(integration: WorkdayIntegration) -> BasicAuth | RefreshTokenAuth:
    """A Workday integration's sign-in with its secrets from the environment."""
    source = integration.source
    if source.auth == "basic":
        return BasicAuth(source.username, _env(integration, "password_env"))
    return RefreshTokenAuth(source.client_id, _env(integration, "client_secret_env"),
                            _env(integration, "refresh_token_env"))
