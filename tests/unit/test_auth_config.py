"""Sign-in settings without a tenant: which fields each auth method takes, national-cloud presets,
certificate files (every way they can be wrong, named), the token cache file's mode, and the
certificate expiry check's thresholds."""

from __future__ import annotations

import os
import stat
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import msal
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from entra_pipeline.config import CLOUDS, ConfigError, credentials, load_integrations, parse_integrations
from entra_pipeline.defs.checks import check_result
from entra_pipeline.sync import checks as c
from entra_pipeline.sources.graph.auth import AuthError, Certificate, ClientSecret, DelegatedSignIn, TokenCacheFile
from entra_pipeline.sources.graph.certificates import CertificateInfo

from tests.support.certificates import self_signed_certificate, write_private


SOURCE = """\
integrations:
  - key: main
    title: Main tenant
    source:
      tenant_id: contoso.onmicrosoft.com
      client_id: 11111111-2222-3333-4444-555555555555
{source}
"""


def config_text(*lines: str) -> str:
    return SOURCE.format(source="\n".join(f"      {line}" for line in lines))


def error_of(*lines: str, base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_integrations(config_text(*lines), "cfg.yaml", base_dir)
    return str(info.value)


# -- national clouds -------------------------------------------------------------------------------

@pytest.mark.parametrize("cloud, graph, login", [
    ("global", "https://graph.microsoft.com", "https://login.microsoftonline.com"),
    ("us_gov", "https://graph.microsoft.us", "https://login.microsoftonline.us"),
    ("us_gov_dod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    ("china", "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
])
def test_cloud_presets(cloud, graph, login):
    source = parse_integrations(config_text("client_secret_env: S", f"cloud: {cloud}")).get("main").source
    assert (source.graph_url, source.authority_url) == (graph, login) == CLOUDS[cloud]


def test_explicit_hosts_override_the_preset():
    source = parse_integrations(config_text(
        "client_secret_env: S", "cloud: china", "graph_base_url: https://graph.internal.example:8443/",
        "authority_host: https://login.internal.example")).get("main").source
    assert source.graph_url == "https://graph.internal.example:8443"
    assert source.authority_url == "https://login.internal.example"


@pytest.mark.parametrize("line, expected", [
    ("cloud: germany", "field 'source.cloud': Input should be 'global', 'us_gov', 'us_gov_dod' or 'china'"),
    ("authority_host: http://login.microsoftonline.us",
     "field 'source.authority_host': must be an https:// URL without query or user name, got 'http://login.microsoftonline.us'"),
    ("graph_base_url: https://graph.microsoft.us?x=1",
     "field 'source.graph_base_url': must be an https:// URL without query or user name, got 'https://graph.microsoft.us?x=1'"),
    ("authority_host: 'https://login.example/ evil'",
     "field 'source.authority_host': must be an https:// URL without query or user name, got 'https://login.example/ evil'"),
    ("authority_host: https://login.microsoftonline.com@evil.example",
     "field 'source.authority_host': must be an https:// URL without query or user name, got "
     "'https://login.microsoftonline.com@evil.example'"),
    ("verify_tls: false", "field 'source.verify_tls': unknown field"),
])
def test_cloud_hosts_are_validated_and_tls_cannot_be_switched_off(line, expected):
    assert error_of("client_secret_env: S", line) == f"cfg.yaml: integration 'main', {expected}"


# -- which fields each method takes ------------------------------------------------------------------

@pytest.mark.parametrize("lines, expected", [
    ((), "auth: client_secret needs client_secret_env, the environment variable holding the secret"),
    (("auth: certificate",), "auth: certificate needs certificate_path (PEM certificate, and the key unless "
                             "private_key_path is given), or private_key_path with certificate_thumbprint"),
    (("auth: certificate", "certificate_thumbprint: " + "AB" * 20),
     "auth: certificate needs certificate_path (PEM certificate, and the key unless private_key_path is given), "
     "or private_key_path with certificate_thumbprint"),
    (("auth: delegated",), "auth: delegated needs token_cache_path, the file that keeps the sign-in (mode 0600)"),
    (("auth: delegated", "token_cache_path: tokens/main.json", "client_secret_env: S"),
     "client_secret_env is for auth: client_secret, but this integration has auth: delegated"),
    (("client_secret_env: S", "token_cache_path: tokens/main.json"),
     "token_cache_path is for auth: delegated, but this integration has auth: client_secret"),
    (("auth: delegated", "token_cache_path: t.json", "certificate_thumbprint: " + "AB" * 20),
     "certificate_thumbprint is for auth: certificate, but this integration has auth: delegated"),
    (("auth: delegated", "token_cache_path: t.json", "demo_tenant: {users: 10}"),
     "the demo tenant signs in with a client secret (auth: client_secret)"),
])
def test_each_auth_method_takes_its_own_fields(lines, expected):
    assert error_of(*lines) == f"cfg.yaml: integration 'main', field 'source': {expected}"


@pytest.mark.parametrize("line, expected", [
    ("certificate_thumbprint: 'not-hex'", "field 'source.certificate_thumbprint': String should match pattern "
                                          "'^[0-9A-Fa-f]{40}$'"),
    ("private_key_password_env: 'PASS; rm -rf /'", "field 'source.private_key_password_env': String should match "
                                                   "pattern '^[A-Za-z_][A-Za-z0-9_]*$'"),
    ("certificate_path: /no/such/app.pem", "field 'source.certificate_path': file '/no/such/app.pem' does not exist"),
])
def test_auth_field_values_are_validated(line, expected):
    assert error_of("auth: certificate", "private_key_path: /etc/hostname", line).startswith(
        f"cfg.yaml: integration 'main', {expected}")


def test_unknown_auth_method():
    assert error_of("auth: password", "client_secret_env: S") == (
        "cfg.yaml: integration 'main', field 'source.auth': Input should be 'client_secret', 'certificate' or "
        "'delegated'")


def test_paths_are_relative_to_the_integrations_file(tmp_path):
    key, cert = self_signed_certificate()
    (tmp_path / "certs").mkdir()
    write_private(tmp_path / "certs" / "app.pem", key + cert)
    (tmp_path / "integrations.yaml").write_text(config_text("auth: certificate", "certificate_path: certs/app.pem"))
    assert load_integrations(tmp_path / "integrations.yaml").get("main").source.certificate_path == \
        tmp_path / "certs" / "app.pem"
    (tmp_path / "integrations.yaml").write_text(config_text("auth: delegated", "token_cache_path: tokens/main.json"))
    integration = load_integrations(tmp_path / "integrations.yaml").get("main")
    assert credentials.credential(integration) == DelegatedSignIn(cache_path=tmp_path / "tokens" / "main.json",
                                                       login_command="python -m entra_pipeline login main")


def test_a_multi_tenant_authority_is_refused():
    text = config_text("client_secret_env: S").replace("contoso.onmicrosoft.com", "organizations")
    with pytest.raises(ConfigError) as info:
        parse_integrations(text, "cfg.yaml")
    assert str(info.value) == ("cfg.yaml: integration 'main', field 'source.tenant_id': 'organizations' is not one "
                               "tenant; give the tenant ID or its domain name")


def test_two_integrations_cannot_share_a_token_cache():
    text = config_text("auth: delegated", "token_cache_path: /srv/tokens/a.json")
    text += text.split("integrations:\n", 1)[1].replace("key: main", "key: other").replace(
        "/srv/tokens/a.json", "/srv/tokens/../tokens/a.json")
    with pytest.raises(ConfigError) as info:
        parse_integrations(text, "cfg.yaml")
    assert str(info.value) == ("cfg.yaml: field 'integrations': integrations 'main' and 'other' share the token "
                               "cache '/srv/tokens/../tokens/a.json'; give each its own token_cache_path")


def test_token_cache_path_must_not_be_a_directory(tmp_path):
    assert error_of("auth: delegated", f"token_cache_path: {tmp_path}") == (
        f"cfg.yaml: integration 'main', field 'source.token_cache_path': {str(tmp_path)!r} is a directory; "
        "name the token cache file")


# -- certificate files -------------------------------------------------------------------------------

def _integration(tmp_path: Path, *lines: str):
    return parse_integrations(config_text("auth: certificate", *lines), "cfg.yaml", tmp_path).get("main")


def test_certificate_file_with_the_key_gives_a_sha256_credential(tmp_path):
    key, cert = self_signed_certificate("contacts-sync")
    write_private(tmp_path / "app.pem", key + cert)
    credential, info = credentials.certificate(_integration(tmp_path, "certificate_path: app.pem"))
    assert isinstance(credential, Certificate)
    assert credential.certificate_pem.encode() == cert and credential.thumbprint is None
    assert credential.msal_credential() == {"private_key": credential.private_key_pem, "public_certificate": cert.decode()}
    assert info.subject == "CN=contacts-sync" and len(info.thumbprint) == 40 and info.thumbprint.isupper()
    assert "PRIVATE KEY" not in repr(credential) and "PRIVATE KEY" not in repr(info)


def test_separate_key_and_thumbprint_only(tmp_path):
    key, cert = self_signed_certificate()
    write_private(tmp_path / "app.key", key)
    write_private(tmp_path / "app.crt", cert)
    _, info = credentials.certificate(_integration(tmp_path, "certificate_path: app.crt", "private_key_path: app.key"))
    credential, none = credentials.certificate(_integration(tmp_path, "private_key_path: app.key",
                                                            f"certificate_thumbprint: {info.thumbprint.lower()}"))
    assert none is None
    assert credential.msal_credential() == {"private_key": credential.private_key_pem, "thumbprint": info.thumbprint.lower()}


def test_encrypted_key_with_its_password_from_the_environment(tmp_path, monkeypatch):
    key, cert = self_signed_certificate()
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"k3y-PASSWORD"))
    write_private(tmp_path / "app.pem", encrypted + cert)
    integration = _integration(tmp_path, "certificate_path: app.pem", "private_key_password_env: APP_KEY_PASSWORD")
    with pytest.raises(ConfigError) as info:
        credentials.certificate(integration)
    assert str(info.value) == ("integration 'main': environment variable APP_KEY_PASSWORD "
                               "(source.private_key_password_env) is not set")
    monkeypatch.setenv("APP_KEY_PASSWORD", "wrong")
    with pytest.raises(ConfigError) as info:
        credentials.certificate(integration)
    assert str(info.value) == (f"integration 'main', field 'source.certificate_path': {tmp_path / 'app.pem'}: the "
                               "private key cannot be read (wrong password, or not a PEM private key)")
    monkeypatch.setenv("APP_KEY_PASSWORD", "k3y-PASSWORD")
    credential, _ = credentials.certificate(integration)
    # MSAL gets the key decrypted once; the password is not carried along.
    assert credential.passphrase is None and "ENCRYPTED" not in credential.private_key_pem
    without = _integration(tmp_path, "certificate_path: app.pem")
    with pytest.raises(ConfigError) as info:
        credentials.certificate(without)
    assert str(info.value) == (f"integration 'main', field 'source.certificate_path': {tmp_path / 'app.pem'}: the "
                               "private key is encrypted and no password was given (source.private_key_password_env)")


def test_a_private_key_other_users_can_read_is_refused(tmp_path):
    key, cert = self_signed_certificate()
    (tmp_path / "app.pem").write_bytes(key + cert)
    (tmp_path / "app.pem").chmod(0o644)
    with pytest.raises(ConfigError) as info:
        credentials.certificate(_integration(tmp_path, "certificate_path: app.pem"))
    assert str(info.value) == (f"integration 'main', field 'source.certificate_path': {tmp_path / 'app.pem'} holds a "
                               f"private key other users can read (mode 0644); run 'chmod 600 {tmp_path / 'app.pem'}'")


def test_certificate_file_problems_name_the_field_and_file(tmp_path):
    key, cert = self_signed_certificate()
    other_key, _ = self_signed_certificate()
    write_private(tmp_path / "cert_only.pem", cert)
    write_private(tmp_path / "key_only.pem", key)
    write_private(tmp_path / "other.key", other_key)
    write_private(tmp_path / "garbage.pem", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(tmp_path / "ec.key", ec_key)

    def problem(*lines: str) -> str:
        with pytest.raises(ConfigError) as info:
            credentials.certificate(_integration(tmp_path, *lines))
        return str(info.value)

    where = "integration 'main', field"
    assert problem("certificate_path: cert_only.pem") == \
        f"{where} 'source.certificate_path': {tmp_path / 'cert_only.pem'} holds no PEM private key"
    assert problem("certificate_path: key_only.pem") == \
        f"{where} 'source.certificate_path': {tmp_path / 'key_only.pem'} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    assert problem("certificate_path: garbage.pem", "private_key_path: key_only.pem") == \
        f"{where} 'source.certificate_path': {tmp_path / 'garbage.pem'}: the PEM certificate cannot be parsed"
    assert problem("certificate_path: cert_only.pem", "private_key_path: other.key") == \
        f"{where} 'source.private_key_path': {tmp_path / 'other.key'}: the private key does not belong to the " \
        f"certificate in {tmp_path / 'cert_only.pem'}"
    assert problem("certificate_path: cert_only.pem", "private_key_path: key_only.pem",
                   "certificate_thumbprint: " + "AB" * 20).startswith(
        f"{where} 'source.certificate_thumbprint': {'AB' * 20} is not the thumbprint of {tmp_path / 'cert_only.pem'} (")
    assert problem("private_key_path: ec.key", "certificate_thumbprint: " + "AB" * 20) == \
        f"{where} 'source.private_key_path': {tmp_path / 'ec.key'}: the private key is not an RSA key; Entra ID " \
        "certificate credentials need RSA"
    message = problem("certificate_path: cert_only.pem", "private_key_path: other.key")
    assert "PRIVATE KEY" not in message and other_key.decode().splitlines()[1] not in message


# -- the token cache file ---------------------------------------------------------------------------

def test_token_cache_is_written_0600_whatever_the_umask(tmp_path):
    cache = msal.SerializableTokenCache()
    cache.add({"client_id": "c", "scope": ["s"], "token_endpoint": "https://login.example/t/oauth2/v2.0/token",
               "response": {"access_token": "at", "expires_in": 3600, "token_type": "Bearer"}})
    target = tmp_path / "tokens" / "main.json"
    old = os.umask(0)
    try:
        TokenCacheFile(target, "python -m entra_pipeline login main").save(cache)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["main.json"]  # no temporary file left
    assert list(TokenCacheFile(target, "x").load().search(msal.TokenCache.CredentialType.ACCESS_TOKEN))[0]["secret"] == "at"


def test_a_token_cache_others_can_read_is_refused(tmp_path):
    target = tmp_path / "main.json"
    target.write_text("{}")
    target.chmod(0o644)
    with pytest.raises(AuthError) as info:
        TokenCacheFile(target, "python -m entra_pipeline login main").load()
    assert str(info.value) == (f"token cache {target} can be read or changed by other users (mode 0644); run "
                               f"'chmod 600 {target}', or delete it and sign in again with "
                               "python -m entra_pipeline login main")
    target.chmod(0o600)
    target.write_text("not json")
    with pytest.raises(AuthError) as info:
        TokenCacheFile(target, "python -m entra_pipeline login main").load()
    assert str(info.value) == (f"token cache {target} is not an MSAL token cache; sign in again with "
                               "python -m entra_pipeline login main")


# -- the expiry check ---------------------------------------------------------------------------------

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _info(days: float) -> CertificateInfo:
    return CertificateInfo(subject="CN=app", thumbprint="AB" * 20, not_before=NOW - timedelta(days=300),
                           not_after=NOW + timedelta(days=days))


@pytest.mark.parametrize("days, passed, description", [
    (31, True, f"certificate {'AB' * 20} valid until 2026-12-27 (31 days)"),
    (30, True, f"certificate {'AB' * 20} valid until 2026-12-26 (30 days)"),
    (29.5, False, f"certificate {'AB' * 20} expires on 2026-12-26 00:00 UTC, in 29 days: add a new certificate to "
                  "the app registration and set source.certificate_path to it"),
    (-2, False, f"certificate {'AB' * 20} expired on 2026-11-24 12:00 UTC, 2 days ago: add a new certificate to "
                "the app registration and set source.certificate_path to it"),
])
def test_certificate_check_warns_30_days_ahead(days, passed, description):
    # As the asset reports it to Dagster.
    result = check_result(c.certificate_result("certificate", _info(days), NOW))
    assert (result.passed, result.severity, result.description) == (passed, dg.AssetCheckSeverity.WARN, description)
    assert result.metadata["days_left"].value == days


def test_certificate_check_without_a_certificate_file_or_without_a_certificate():
    unknown = c.certificate_result("certificate", None, NOW)
    assert (unknown.passed, unknown.description) == (
        False, "only certificate_thumbprint is configured, so the certificate's expiry cannot be watched; "
               "set source.certificate_path")
    secret = c.certificate_result("client_secret", None, NOW)
    assert (secret.passed, secret.description) == (True, "signs in with auth: client_secret, no certificate")


def test_credential_kinds(tmp_path, monkeypatch):
    monkeypatch.setenv("S", "value")
    assert credentials.credential(parse_integrations(config_text("client_secret_env: S")).get("main")) == ClientSecret("value")
    assert "value" not in repr(ClientSecret("value"))
