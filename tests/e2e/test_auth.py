"""Each way of signing in, end to end over HTTPS against the emulator's identity platform: a
certificate (client assertion), and a delegated service account (device-code login, then silent
refresh in scheduled runs, then the clear message when the refresh token is gone). Every run
either syncs the exact contacts or fails with one line and leaves the warehouse as it was; no
secret, token, device code or private key is left in logs, events or the warehouse."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time

import pytest

from entra_pipeline import cli
from entra_pipeline.config import CONFIG_PATH_ENV
from entra_pipeline.sync import checks as c

from tests.support.certificates import self_signed_certificate, write_private
from tests.support.expected import expected_contacts
from tests.support.integrations import integration
from tests.support.runs import failure_messages, recorded_text


def _contacts(sync, key: str) -> dict[str, str]:
    return dict(sync.query("SELECT source_id, contact_id FROM contacts WHERE integration = ?", [key]))


def _users_failure(result) -> str:
    """The one line the raw users step failed with (the groups step fails the same way)."""
    [message] = [m for m in failure_messages(result) if "reading users failed" in m]
    return message.removeprefix("dagster._core.definitions.events.Failure: ").strip()


def _check(result, name: str):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _certificate_integration(key: str, emulator, **source) -> dict:
    return integration(key, emulator, source={"auth": "certificate", "client_secret_env": None, **source})


@pytest.fixture
def registered(emulator):
    """Certificates registered on the emulator's app for one test, removed after it."""
    thumbprints: list[str] = []

    def register(cert_pem: bytes) -> str:
        thumbprints.append(emulator.add_certificate(cert_pem))
        return thumbprints[-1]

    yield register
    for thumbprint in thumbprints:
        emulator.remove_certificate(thumbprint)


# -- certificate ---------------------------------------------------------------------------------------

def test_certificate_sign_in_syncs_and_reports_the_expiry(make_sync, emulator, directory, registered, tmp_path,
                                                          caplog):
    caplog.set_level(logging.DEBUG)
    key, cert = self_signed_certificate("contacts-sync", days=400)
    write_private(tmp_path / "app.pem", key + cert)
    thumbprint = registered(cert)
    sync = make_sync(_certificate_integration("certs", emulator, certificate_path=str(tmp_path / "app.pem")))
    result = sync.run("certs")
    assert result.success, failure_messages(result)
    assert _contacts(sync, "certs") == expected_contacts(directory)
    check = _check(result, c.CERTIFICATE_NOT_EXPIRING)
    assert check.passed
    assert check.metadata["thumbprint"].value == thumbprint
    assert check.description.startswith(f"certificate {thumbprint} valid until ")
    # Neither the key nor any token issued for it is left anywhere.
    key_lines = [line for line in key.decode().splitlines() if not line.startswith("-----")]
    for place, text in recorded_text(sync, [result], caplog).items():
        for secret in key_lines + emulator.issued_credentials():
            assert secret not in text, place


def test_certificate_by_thumbprint_signs_in_but_warns_that_expiry_is_unknown(make_sync, emulator, directory,
                                                                            registered, tmp_path):
    key, cert = self_signed_certificate()
    write_private(tmp_path / "app.key", key)
    thumbprint = registered(cert)
    sync = make_sync(_certificate_integration("thumb", emulator, private_key_path=str(tmp_path / "app.key"),
                                              certificate_thumbprint=thumbprint))
    result = sync.run("thumb")
    assert result.success, failure_messages(result)
    assert _contacts(sync, "thumb") == expected_contacts(directory)
    assert not _check(result, c.CERTIFICATE_NOT_EXPIRING).passed

    # The key made readable by others: refused before any request, the warehouse as it was.
    before, requests = sync.snapshot(), emulator.request_count
    (tmp_path / "app.key").chmod(0o640)
    refused = sync.run("thumb")
    assert {m.removeprefix("dagster._core.definitions.events.Failure: ").strip()
            for m in failure_messages(refused)} == {  # the users and the groups step alike
        f"integration 'thumb', field 'source.private_key_path': {tmp_path / 'app.key'} holds a private key other "
        f"users can read (mode 0640); run 'chmod 600 {tmp_path / 'app.key'}'"}
    assert sync.snapshot() == before and emulator.request_count == requests


def test_certificate_expiring_within_30_days_warns_but_syncs(make_sync, emulator, directory, registered, tmp_path):
    key, cert = self_signed_certificate(days=12.5)
    write_private(tmp_path / "app.pem", key + cert)
    thumbprint = registered(cert)
    sync = make_sync(_certificate_integration("soon", emulator, certificate_path=str(tmp_path / "app.pem")))
    result = sync.run("soon")
    assert result.success, failure_messages(result)
    check = _check(result, c.CERTIFICATE_NOT_EXPIRING)
    assert (check.passed, check.severity.value) == (False, "WARN")
    assert check.description.startswith(f"certificate {thumbprint} expires on ")
    assert "in 12 days: add a new certificate to the app registration" in check.description
    assert _contacts(sync, "soon") == expected_contacts(directory)


def test_a_certificate_the_app_does_not_know_fails_cleanly_and_changes_nothing(make_sync, emulator, tmp_path):
    key, cert = self_signed_certificate()
    write_private(tmp_path / "app.pem", key + cert)
    thumbprint = emulator.add_certificate(cert)
    try:
        sync = make_sync(_certificate_integration("gone", emulator, certificate_path=str(tmp_path / "app.pem")))
        assert sync.run("gone").success
        before = sync.snapshot()
    finally:
        emulator.remove_certificate(thumbprint)
    result = sync.run("gone")
    assert not result.success
    message = _users_failure(result)
    assert "integration 'gone': reading users failed: token request to " in message
    assert "refused: invalid_client: AADSTS700027" in message
    assert sync.snapshot() == before


# -- delegated: device code, silent refresh, sign in again --------------------------------------------

@pytest.fixture
def service_account(directory) -> str:
    """The user the delegated integration signs in as (an enabled member of the directory)."""
    return next(u["userPrincipalName"] for u in directory.users if u["accountEnabled"] and u["userType"] == "Member")


@pytest.fixture
def fast_device_codes(emulator):
    interval = emulator.device_code_interval
    emulator.device_code_interval = 1  # MSAL sleeps this long between polls
    yield
    emulator.device_code_interval = interval


@pytest.fixture
def delegated(make_sync, emulator, tmp_path, monkeypatch):
    """A sync whose integration ``key`` signs in as a service account (plus ``others``), with the
    login command pointed at its integrations file; returns (sync, token cache path)."""
    def make(key: str, *others: dict):
        cache = tmp_path / "tokens" / f"{key}.json"
        sync = make_sync(integration(key, emulator, source={"auth": "delegated", "client_secret_env": None,
                                                           "token_cache_path": str(cache)}), *others)
        monkeypatch.setenv(CONFIG_PATH_ENV, str(sync.config))
        return sync, cache

    return make


def _login(emulator, key: str, approve_as: str | None) -> tuple[int | None, str]:
    """``login KEY`` as an operator runs it, while the test plays the person at the browser who
    approves as ``approve_as`` (or declines: None). Returns the exit code and the user code."""
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("rc", cli.main(["login", key])))
    thread.start()
    deadline = time.monotonic() + 30
    while not emulator.pending_device_codes():
        assert time.monotonic() < deadline, "no device code was requested"
        time.sleep(0.05)
    [user_code] = emulator.pending_device_codes()
    if approve_as is None:
        emulator.decline_device_code(user_code)
    else:
        emulator.approve_device_code(user_code, approve_as)
    thread.join(60)
    return outcome.get("rc"), user_code


def test_delegated_sign_in_then_silent_refresh_then_sign_in_again(delegated, emulator, directory, capsys, caplog,
                                                                   fast_device_codes, service_account):
    caplog.set_level(logging.DEBUG)
    sync, cache = delegated("svc")

    # Before anyone signed in, a run says what to do, and writes nothing.
    first = sync.run("svc")
    assert not first.success
    assert _users_failure(first) == (f"integration 'svc': reading users failed: no signed-in account in token "
                                     f"cache {cache}; sign in with python -m entra_pipeline login svc")
    assert all(rows == [] for rows in sync.snapshot().values())

    # The one-time sign-in.
    rc, user_code = _login(emulator, "svc", service_account)
    assert rc == 0
    printed = capsys.readouterr()
    assert f"enter the code {user_code} to authenticate" in printed.out
    assert f"signed in as {service_account}; the sign-in is kept in {cache} (readable only by you)" in printed.out
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700

    # Scheduled runs: tokens from the cache; after the server expired them, from the refresh token.
    synced = sync.run("svc")
    assert synced.success, failure_messages(synced)
    assert _contacts(sync, "svc") == expected_contacts(directory)
    cached = cache.read_text()
    emulator.expire_tokens()
    refreshed = sync.run("svc")
    assert refreshed.success, failure_messages(refreshed)
    assert cache.read_text() != cached  # the new refresh token was kept
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert _contacts(sync, "svc") == expected_contacts(directory)

    # check-config sees the sign-in.
    assert cli.main(["check-config"]) == 0
    assert (f"svc: Test svc [{emulator.base_url}; cron '0 6 * * *'] signed in as {service_account} "
            "(per the token cache; the next sync verifies it)") in capsys.readouterr().out

    # The sign-in is revoked (an admin's revokeSignInSessions): one clear line, nothing changed.
    before = sync.snapshot()
    emulator.revoke_sign_in_sessions()
    emulator.expire_tokens()
    revoked = sync.run("svc")
    assert not revoked.success
    message = _users_failure(revoked)
    assert message.startswith(f"integration 'svc': reading users failed: the sign-in of {service_account} is no "
                              "longer valid (invalid_grant: AADSTS50173")
    assert message.endswith("; sign in again with python -m entra_pipeline login svc")
    assert sync.snapshot() == before

    # Signing in again repairs it.
    assert _login(emulator, "svc", service_account)[0] == 0
    again = sync.run("svc")
    assert again.success, failure_messages(again)

    # Nothing secret anywhere: not the refresh or access tokens, not the device codes.
    issued = emulator.issued_credentials()
    assert len(issued) >= 8
    recorded = recorded_text(sync, [first, synced, refreshed, revoked, again], caplog)
    recorded["console"] = printed.out + printed.err
    for place, text in recorded.items():
        for credential in issued:
            assert credential not in text, place


def test_refresh_token_expired_by_inactivity(delegated, emulator, fast_device_codes, service_account):
    sync, _ = delegated("idle")
    assert _login(emulator, "idle", service_account)[0] == 0
    emulator.expire_refresh_tokens()
    emulator.expire_tokens()
    result = sync.run("idle")
    message = _users_failure(result)
    assert "is no longer valid (invalid_grant: AADSTS700082" in message
    assert message.endswith("; sign in again with python -m entra_pipeline login idle")
    assert all(rows == [] for rows in sync.snapshot().values())


def test_login_that_is_declined_or_for_another_method(delegated, emulator, capsys, fast_device_codes):
    _, cache = delegated("svc", integration("app", emulator))
    assert _login(emulator, "svc", None)[0] == 1
    err = capsys.readouterr().err
    assert err.startswith("integration 'svc': sign-in not completed: authorization_declined: ")
    assert not cache.exists()
    assert cli.main(["login", "app"]) == 2
    assert capsys.readouterr().err == ("integration 'app' has auth: client_secret; login is for auth: delegated "
                                       "(a service account that signs in once)\n")


def test_a_token_cache_widened_to_other_users_is_refused(delegated, emulator, fast_device_codes, service_account):
    sync, cache = delegated("svc")
    assert _login(emulator, "svc", service_account)[0] == 0
    os.chmod(cache, 0o644)
    message = _users_failure(sync.run("svc"))
    assert message == (f"integration 'svc': reading users failed: token cache {cache} can be read or changed by "
                       f"other users (mode 0644); run 'chmod 600 {cache}', or delete it and sign in again with "
                       "python -m entra_pipeline login svc")


def test_certificate_files_are_read_with_the_limits_of_the_configuration(tmp_path):
    """The certificate and key are read when a run signs in, after the configuration was loaded:
    by then the file may be a FIFO or huge, and is read with the same limits, naming the field."""
    from entra_pipeline.files import MAX_PEM_FILE_BYTES
    from entra_pipeline.sources.graph.certificates import CertificateError, load_certificate_credential

    key, cert = self_signed_certificate()
    huge = write_private(tmp_path / "huge.pem", key + cert + b"#" * MAX_PEM_FILE_BYTES)
    with pytest.raises(CertificateError) as info:
        load_certificate_credential(certificate_path=huge, private_key_path=None, thumbprint=None, passphrase=None)
    assert (info.value.field, str(info.value)) == ("source.certificate_path", f"{huge} is 1.0 MB; at most 1 MB is read")

    write_private(tmp_path / "app.key", key)
    fifo = tmp_path / "app.crt"
    os.mkfifo(fifo)
    with pytest.raises(CertificateError) as info:  # read_bytes() would wait for a writer forever
        load_certificate_credential(certificate_path=fifo, private_key_path=tmp_path / "app.key", thumbprint=None,
                                    passphrase=None)
    assert (info.value.field, str(info.value)) == ("source.certificate_path", f"{fifo} is a FIFO, not a regular file")


# -- MSAL_FORCE_REGION ------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", ["client_secret", "certificate"])
def test_msal_force_region_in_the_environment_does_not_move_the_token_requests(make_sync, emulator, directory,
                                                                                registered, tmp_path, monkeypatch,
                                                                                auth):
    """MSAL would send app-only token requests to westus.{authority host} (a host nobody
    configured, refused by the origin-bound session): tokens come from authority_host only."""
    monkeypatch.setenv("MSAL_FORCE_REGION", "westus")
    if auth == "certificate":
        key, cert = self_signed_certificate()
        write_private(tmp_path / "app.pem", key + cert)
        registered(cert)
        entry = _certificate_integration("region", emulator, certificate_path=str(tmp_path / "app.pem"))
    else:
        entry = integration("region", emulator)
    sync = make_sync(entry)
    tokens = len(emulator.issued_credentials())
    result = sync.run("region")
    assert result.success, failure_messages(result)
    assert _contacts(sync, "region") == expected_contacts(directory)
    assert len(emulator.issued_credentials()) > tokens  # issued by the configured authority


# -- TLS is verified whatever the sign-in ---------------------------------------------------------------

@pytest.mark.parametrize("auth", ["client_secret", "certificate", "delegated"])
def test_without_the_tenants_ca_nothing_is_sent(make_sync, emulator, registered, tmp_path, monkeypatch, capsys,
                                                auth):
    """The emulator's certificate is not publicly trusted: leaving out ca_bundle must fail the TLS
    handshake (REQUESTS_CA_BUNDLE, set by conftest to a missing file, must not matter either)."""
    key, cert = self_signed_certificate()
    write_private(tmp_path / "app.pem", key + cert)
    registered(cert)
    source = {"ca_bundle": None, **{
        "client_secret": {},
        "certificate": {"auth": "certificate", "client_secret_env": None, "certificate_path": str(tmp_path / "app.pem")},
        "delegated": {"auth": "delegated", "client_secret_env": None, "token_cache_path": str(tmp_path / "t.json")},
    }[auth]}
    sync = make_sync(integration("tls", emulator, source=source))
    tokens = len(emulator.issued_credentials())
    if auth == "delegated":
        monkeypatch.setenv(CONFIG_PATH_ENV, str(sync.config))
        assert cli.main(["login", "tls"]) == 1
        error = capsys.readouterr().err
        assert error.startswith(f"integration 'tls': authority {emulator.base_url}/") and "SSLError" in error
        assert "CERTIFICATE_VERIFY_FAILED" in error and not (tmp_path / "t.json").exists()
    result = sync.run("tls")
    message = _users_failure(result)
    assert message.startswith(f"integration 'tls': reading users failed: authority {emulator.base_url}/")
    assert "SSLError" in message and "CERTIFICATE_VERIFY_FAILED" in message
    assert all(rows == [] for rows in sync.snapshot().values())
    assert len(emulator.issued_credentials()) == tokens  # no token was issued


def test_a_new_sign_in_is_not_undone_by_a_run_that_started_before_it(delegated, emulator, directory,
                                                                       fast_device_codes):
    """A run holds the old sign-in in memory; the operator signs in again as another account while
    it runs. When the run renews its token it re-reads the cache: the file keeps the new sign-in
    and the run continues as the new account."""
    from entra_pipeline.config import load_integrations
    from entra_pipeline.defs.resources import GraphResource

    first, second = [u for u in directory.users if u["accountEnabled"] and u["userType"] == "Member"][:2]
    sync, cache = delegated("svc")
    assert _login(emulator, "svc", first["userPrincipalName"])[0] == 0
    with GraphResource().client(load_integrations(sync.config).get("svc")) as client:
        token = client._token()
        assert emulator.identity.tokens[token].user_id == first["id"]
        assert _login(emulator, "svc", second["userPrincipalName"])[0] == 0
        renewed = client._token(rejected=token)
    assert emulator.identity.tokens[renewed].user_id == second["id"]
    assert second["userPrincipalName"] in cache.read_text() and first["userPrincipalName"] not in cache.read_text()


@pytest.mark.parametrize("configured, signed_in, same", [
    ("11111111-2222-3333-4444-555555555555", "11111111-2222-3333-4444-555555555555", True),
    ("11111111-2222-3333-4444-555555555555", "99999999-2222-3333-4444-555555555555", False),
    ("contoso.onmicrosoft.com", "99999999-2222-3333-4444-555555555555", True),  # a domain cannot be compared
])
def test_the_sign_in_must_be_of_the_configured_tenant(configured, signed_in, same):
    from entra_pipeline.sources.graph.auth import _Tokens

    tokens = _Tokens(authority_host="https://login.example", tenant_id=configured, graph_url="https://graph.example")
    assert tokens._of_tenant(signed_in) is same
