"""The demo tenant's identity platform driven by MSAL itself over real HTTPS: certificate
credentials (client assertions), the device code flow, refresh tokens, and delegated scopes on Graph.

One emulator of its own (a small directory) so attribute changes never reach other tests; a
test that changes an attribute restores it through ``monkeypatch``. Sessions ignore
REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE and trust only the emulator's CA.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import jwt
import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from entra_pipeline.emulator import Emulator, generate_directory

from tests.support.tenant import CLIENT_ID, SECRET, TENANT_ID, running_emulator


GRAPH = "https://graph.microsoft.com"
APP_SCOPE = [f"{GRAPH}/.default"]
READ_SCOPE = [f"{GRAPH}/Directory.Read.All"]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class RecordingSession(requests.Session):
    """MSAL's http_client: trusts only the emulator's CA and records each POST's form and answer."""

    def __init__(self, ca_path: str) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = ca_path
        self.posts: list[tuple[str, dict, int]] = []
        self.posted = threading.Event()

    def post(self, url, data=None, **kwargs):
        response = super().post(url, data=data, **kwargs)
        self.posts.append((url, dict(data or {}), response.status_code))
        self.posted.set()
        return response


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    directory = generate_directory(users=40, groups=18, seed=5)
    with running_emulator(directory, tmp_path_factory.mktemp("identity-certs")) as server:
        # MSAL sleeps `interval` whole seconds between polls; 0 would make it poll in a tight loop.
        server.device_code_interval = 1
        yield server


@pytest.fixture
def http(tenant):
    with RecordingSession(tenant.ca_path) as session:
        yield session


def _certificate(*, expired: bool = False) -> tuple[str, str, x509.Certificate]:
    """(private key PEM, certificate PEM, certificate): self-signed RSA 2048."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "entra-pipeline test")])
    now = dt.datetime.now(dt.timezone.utc)
    start, end = (now - dt.timedelta(days=60), now - dt.timedelta(days=1)) if expired else (
        now - dt.timedelta(days=1), now + dt.timedelta(days=365))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode(), cert


@pytest.fixture(scope="module")
def registered(tenant):
    key_pem, cert_pem, cert = _certificate()
    thumbprint = tenant.add_certificate(cert_pem)
    return key_pem, cert_pem, cert, thumbprint


def _confidential(tenant: Emulator, http: RecordingSession, credential) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(CLIENT_ID, client_credential=credential, authority=tenant.authority,
                                              instance_discovery=False, http_client=http)


def _public(tenant: Emulator, http: RecordingSession, cache=None, **kwargs) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(CLIENT_ID, authority=tenant.authority, instance_discovery=False,
                                        http_client=http, token_cache=cache, **kwargs)


def _users(http: RecordingSession, tenant: Emulator, token: str) -> requests.Response:
    return http.get(f"{tenant.graph_url}/users", params={"$top": 1}, headers={"Authorization": f"Bearer {token}"})


def _assertion_header(http: RecordingSession) -> dict:
    assertions = [data["client_assertion"] for _, data, _ in http.posts if "client_assertion" in data]
    assert assertions, "MSAL sent no client assertion"
    return jwt.get_unverified_header(assertions[-1])


def _assert_error(result: dict, error: str, code: int, text: str = "") -> None:
    assert "access_token" not in result, result
    assert result["error"] == error and result["error_codes"] == [code], result
    assert result["error_description"].startswith(f"AADSTS{code}: {text}"), result["error_description"]


def _upn(tenant: Emulator, index: int = 0) -> str:
    return [u for u in tenant.directory.users if u["accountEnabled"]][index]["userPrincipalName"]


# ---------------------------------------------------------------------------
# certificate credentials


def test_certificate_with_public_certificate_signs_ps256_and_graph_accepts_the_token(tenant, http, registered):
    key_pem, cert_pem, cert, thumbprint = registered
    assert thumbprint == cert.fingerprint(hashes.SHA1()).hex().upper()
    app = _confidential(tenant, http, {"private_key": key_pem, "public_certificate": cert_pem})
    result = app.acquire_token_for_client(scopes=APP_SCOPE)
    assert result.get("token_type") == "Bearer" and result["expires_in"] == 3599, result
    header = _assertion_header(http)
    assert header["alg"] == "PS256" and "x5t#S256" in header and "x5t" not in header
    assert _users(http, tenant, result["access_token"]).status_code == 200


def test_certificate_by_thumbprint_signs_rs256_and_graph_accepts_the_token(tenant, http, registered):
    key_pem, _, _, thumbprint = registered
    app = _confidential(tenant, http, {"private_key": key_pem, "thumbprint": thumbprint})
    result = app.acquire_token_for_client(scopes=APP_SCOPE)
    assert "access_token" in result, result
    header = _assertion_header(http)
    assert header["alg"] == "RS256" and "x5t" in header and "x5t#S256" not in header
    assert _users(http, tenant, result["access_token"]).status_code == 200


def test_unregistered_certificate_is_refused(tenant, http):
    key_pem, cert_pem, cert = _certificate()
    result = _confidential(tenant, http, {"private_key": key_pem, "public_certificate": cert_pem}) \
        .acquire_token_for_client(scopes=APP_SCOPE)
    _assert_error(result, "invalid_client", 700027,
                  "The certificate with identifier used to sign the client assertion is not registered")
    assert "The key was not found" in result["error_description"]
    assert cert.fingerprint(hashes.SHA256()).hex().upper() in result["error_description"]
    assert http.posts[-1][2] == 401


def test_removed_certificate_is_refused(tenant, http):
    key_pem, cert_pem, _ = _certificate()
    thumbprint = tenant.add_certificate(cert_pem.encode())  # bytes work too
    credential = {"private_key": key_pem, "thumbprint": thumbprint}
    assert "access_token" in _confidential(tenant, http, credential).acquire_token_for_client(scopes=APP_SCOPE)
    tenant.remove_certificate(thumbprint.lower())  # thumbprints are case-insensitive
    result = _confidential(tenant, http, credential).acquire_token_for_client(scopes=APP_SCOPE)
    _assert_error(result, "invalid_client", 700027)
    assert f"Thumbprint of key used by client: '{thumbprint}'" in result["error_description"]
    with pytest.raises(KeyError):
        tenant.remove_certificate(thumbprint)
    with pytest.raises(ValueError):
        tenant.add_certificate("not a certificate")


def test_expired_certificate_is_refused(tenant, http):
    key_pem, cert_pem, _ = _certificate(expired=True)
    tenant.add_certificate(cert_pem)
    result = _confidential(tenant, http, {"private_key": key_pem, "public_certificate": cert_pem}) \
        .acquire_token_for_client(scopes=APP_SCOPE)
    _assert_error(result, "invalid_client", 700027, "Client assertion contains an invalid signature.")
    assert "The key used is expired" in result["error_description"]


def _assertion(tenant: Emulator, key_pem: str, cert: x509.Certificate, *, alg: str = "RS256",
               headers: dict | None = None, **claims) -> str:
    now = int(time.time())
    payload = {"aud": f"{tenant.authority}/oauth2/v2.0/token", "iss": CLIENT_ID, "sub": CLIENT_ID,
               "jti": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + 600}
    payload.update(claims)
    header = {"x5t": jwt.utils.base64url_encode(cert.fingerprint(hashes.SHA1())).decode()}
    header.update(headers or {})
    return jwt.encode(payload, key_pem, algorithm=alg, headers=header)


@pytest.mark.parametrize(("case", "code", "text"), [
    ("wrong audience", 50027, "JWT token is invalid or malformed."),
    ("expired assertion", 700024, "Client assertion is not within its valid time range."),
    ("not yet valid", 700024, "Client assertion is not within its valid time range."),
    ("malformed", 50027, "JWT token is invalid or malformed."),
    ("bad signature", 700027, "Client assertion failed signature validation."),
    ("unsupported algorithm", 5002738, "Invalid JWT token. 'HS256' is not a supported signature algorithm."),
    ("issuer is another app", 700021, "Client assertion application identifier doesn't match"),
    ("subject differs from issuer", 50048, "Subject mismatches Issuer claim"),
])
def test_bad_client_assertions_are_refused(tenant, http, registered, case, code, text):
    key_pem, _, cert, _ = registered
    other_key, _, _ = _certificate()
    now = int(time.time())
    assertion = {
        "wrong audience": lambda: _assertion(
            tenant, key_pem, cert, aud=f"https://login.microsoftonline.com/{TENANT_ID}/oauth2/v2.0/token"),
        "expired assertion": lambda: _assertion(tenant, key_pem, cert, iat=now - 7200, nbf=now - 7200,
                                                exp=now - 3600),
        "not yet valid": lambda: _assertion(tenant, key_pem, cert, nbf=now + 3600, exp=now + 4200),
        "malformed": lambda: "not-a.jwt",
        # Signed by another key, but naming the registered certificate.
        "bad signature": lambda: _assertion(tenant, other_key, cert),
        "unsupported algorithm": lambda: jwt.encode({"aud": "x"}, "k" * 32, algorithm="HS256",
                                                    headers={"x5t": "AAAA"}),
        "issuer is another app": lambda: _assertion(tenant, key_pem, cert, iss=str(uuid.uuid4())),
        "subject differs from issuer": lambda: _assertion(tenant, key_pem, cert, sub=str(uuid.uuid4())),
    }[case]()
    # A callable, as MSAL recommends for assertions made outside it.
    result = _confidential(tenant, http, {"client_assertion": lambda: assertion}) \
        .acquire_token_for_client(scopes=APP_SCOPE)
    _assert_error(result, "invalid_client", code, text)
    assert http.posts[-1][2] == 401


def test_assertion_audience_may_name_the_tenant_by_domain_and_aud_by_v1_endpoint(tenant, http, registered):
    key_pem, _, cert, _ = registered
    for aud in (f"{tenant.base_url}/contoso.onmicrosoft.com/oauth2/v2.0/token",
                f"{tenant.base_url}/{TENANT_ID}/oauth2/token"):
        assertion = _assertion(tenant, key_pem, cert, aud=aud)
        result = _confidential(tenant, http, {"client_assertion": lambda: assertion}) \
            .acquire_token_for_client(scopes=APP_SCOPE)
        assert "access_token" in result, (aud, result)


def test_raw_assertion_requests(tenant, http, registered):
    key_pem, _, cert, _ = registered
    url = f"{tenant.authority}/oauth2/v2.0/token"
    base = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": APP_SCOPE[0]}
    assertion = _assertion(tenant, key_pem, cert)
    # Unpadded x5t (JOSE style) works as well as MSAL's padded one.
    ok = http.post(url, data={**base, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    assert ok.status_code == 200 and ok.json()["access_token"].startswith("emu.")
    both = http.post(url, data={**base, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
                                "client_secret": SECRET})
    assert both.status_code == 400 and both.json()["error_codes"] == [90023]
    wrong_type = http.post(url, data={**base, "client_assertion_type": "saml", "client_assertion": assertion})
    assert wrong_type.status_code == 400 and wrong_type.json()["error_codes"] == [90023]
    no_type = http.post(url, data={**base, "client_assertion": assertion})
    assert no_type.status_code == 400 and no_type.json()["error_codes"] == [900144]
    # The secret path is unchanged.
    secret = http.post(url, data={**base, "client_secret": SECRET})
    assert secret.status_code == 200 and "scope" not in secret.json() and "refresh_token" not in secret.json()


# ---------------------------------------------------------------------------
# device code flow


def _wait_for_poll(http: RecordingSession, status: int = 400, timeout: float = 5.0) -> None:
    """Until the device flow's first poll was answered (authorization_pending)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(data.get("grant_type") == DEVICE_GRANT and code == status for _, data, code in http.posts):
            return
        http.posted.wait(0.02)
        http.posted.clear()
    raise AssertionError("the device flow never polled")


def _device_sign_in(tenant: Emulator, http: RecordingSession, upn: str, scopes=READ_SCOPE, cache=None,
                    background: bool = False, **kwargs):
    """A device sign-in through MSAL: approved before the first poll (no polling sleep), or with
    ``background`` polled on a thread and approved once it waits (one ``interval`` of sleep)."""
    app = _public(tenant, http, cache, **kwargs)
    flow = app.initiate_device_flow(scopes=scopes)
    assert "user_code" in flow, flow
    result: dict = {}
    if not background:
        tenant.approve_device_code(flow["user_code"], upn)
        result.update(app.acquire_token_by_device_flow(flow, exit_condition=lambda flow: True))
        return app, flow, result
    worker = threading.Thread(target=lambda: result.update(app.acquire_token_by_device_flow(flow)), daemon=True)
    worker.start()
    _wait_for_poll(http)
    assert flow["user_code"] in tenant.pending_device_codes()
    tenant.approve_device_code(flow["user_code"], upn)
    worker.join(10)
    assert not worker.is_alive()
    return app, flow, result


def test_device_flow_signs_in_and_the_account_survives_a_reloaded_cache(tenant, http):
    upn = _upn(tenant)
    user = tenant.directory.user_by_upn(upn)
    cache = msal.SerializableTokenCache()
    started = time.monotonic()
    app, flow, result = _device_sign_in(tenant, http, upn, cache=cache, background=True)
    polls = [code for _, data, code in http.posts if data.get("grant_type") == DEVICE_GRANT]
    assert polls == [400, 200]  # interval 1: one pending poll, a second's sleep, then the tokens
    assert time.monotonic() - started < 5
    uri = f"{tenant.base_url}/devicelogin"
    assert flow["verification_uri"] == uri and flow["expires_in"] == 900 and flow["interval"] == 1
    assert flow["message"] == (f"To sign in, use a web browser to open the page {uri} and enter the code "
                               f"{flow['user_code']} to authenticate.")
    assert result["token_source"] == "identity_provider", result
    assert result["scope"] == f"{GRAPH}/Directory.Read.All profile openid"
    assert result["expires_in"] == result["ext_expires_in"] == 3599
    assert result["refresh_token"].startswith("emu.rt.") and result["client_info"]
    claims = result["id_token_claims"]
    assert claims["preferred_username"] == upn and claims["oid"] == user["id"] and claims["tid"] == TENANT_ID
    assert claims["aud"] == CLIENT_ID and claims["iss"] == f"{tenant.authority}/v2.0"
    assert flow["user_code"] not in tenant.pending_device_codes()
    assert _users(http, tenant, result["access_token"]).status_code == 200

    [account] = app.get_accounts()
    assert account["username"] == upn and account["home_account_id"] == f"{user['id']}.{TENANT_ID}"

    reloaded = msal.SerializableTokenCache()
    reloaded.deserialize(cache.serialize())
    again = _public(tenant, http, reloaded)
    [account] = again.get_accounts()
    assert account["username"] == upn
    cached = again.acquire_token_silent(READ_SCOPE, account)
    assert cached["token_source"] == "cache" and cached["access_token"] == result["access_token"]
    posts = len(http.posts)
    fresh = again.acquire_token_silent(READ_SCOPE, account, force_refresh=True)
    assert fresh["token_source"] == "identity_provider" and fresh["access_token"] != result["access_token"]
    assert http.posts[-1][1]["grant_type"] == "refresh_token" and len(http.posts) == posts + 1
    assert _users(http, tenant, fresh["access_token"]).status_code == 200

    # A device code is redeemed once.
    reuse = http.post(f"{tenant.authority}/oauth2/v2.0/token", data={
        "grant_type": DEVICE_GRANT, "client_id": CLIENT_ID, "device_code": flow["device_code"]})
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant" and reuse.json()["error_codes"] == [70000]

    issued = tenant.issued_credentials()
    for credential in (flow["device_code"], result["access_token"], result["refresh_token"], fresh["access_token"]):
        assert credential in issued
    with tenant.identity.lock:
        assert result["access_token"] in tenant.identity.tokens and result["refresh_token"] not in tenant.identity.tokens


def test_device_flow_pending_then_declined(tenant, http):
    app = _public(tenant, http)
    flow = app.initiate_device_flow(scopes=READ_SCOPE)
    # exit_condition: one poll, no sleeping.
    pending = app.acquire_token_by_device_flow(flow, exit_condition=lambda flow: True)
    _assert_error(pending, "authorization_pending", 70016)
    assert flow["user_code"] in tenant.pending_device_codes()
    tenant.decline_device_code(flow["user_code"])
    assert flow["user_code"] not in tenant.pending_device_codes()
    # Declined is final: MSAL stops polling at once.
    declined = app.acquire_token_by_device_flow(flow)
    _assert_error(declined, "authorization_declined", 65004)
    with pytest.raises(KeyError):
        tenant.approve_device_code(flow["user_code"], _upn(tenant))


def test_device_flow_expired_code(tenant, http, monkeypatch):
    monkeypatch.setattr(tenant, "device_code_ttl", 120)
    app = _public(tenant, http)
    flow = app.initiate_device_flow(scopes=READ_SCOPE)
    assert flow["expires_in"] == 120
    tenant.expire_device_codes()
    assert flow["user_code"] not in tenant.pending_device_codes()
    with pytest.raises(KeyError):
        tenant.approve_device_code(flow["user_code"], _upn(tenant))
    expired = app.acquire_token_by_device_flow(flow)
    _assert_error(expired, "expired_token", 70019)


def test_approve_checks_the_user(tenant, http):
    app = _public(tenant, http)
    flow = app.initiate_device_flow(scopes=READ_SCOPE)
    with pytest.raises(KeyError):
        tenant.approve_device_code(flow["user_code"], "nobody@contoso.com")
    disabled = next(u for u in tenant.directory.users if not u["accountEnabled"])
    with pytest.raises(ValueError):
        tenant.approve_device_code(flow["user_code"], disabled["userPrincipalName"])
    assert flow["user_code"] in tenant.pending_device_codes()
    with pytest.raises(KeyError):
        tenant.decline_device_code("NOSUCHCODE")


def test_device_flow_needs_public_client_flows(tenant, http, monkeypatch):
    monkeypatch.setattr(tenant, "allow_public_client", False)
    app = _public(tenant, http)
    flow = app.initiate_device_flow(scopes=READ_SCOPE)
    tenant.approve_device_code(flow["user_code"], _upn(tenant))
    result = app.acquire_token_by_device_flow(flow)
    _assert_error(result, "invalid_client", 7000218)


def test_device_flow_scope_errors(tenant, http):
    app = _public(tenant, http)
    mixed = app.initiate_device_flow(scopes=[f"{GRAPH}/.default", f"{GRAPH}/User.Read"])
    _assert_error(mixed, "invalid_scope", 70011)
    foreign = app.initiate_device_flow(scopes=["https://api.example.com/read"])
    _assert_error(foreign, "invalid_resource", 500011)
    raw = http.post(f"{tenant.authority}/oauth2/v2.0/devicecode",
                    data={"client_id": str(uuid.uuid4()), "scope": "User.Read"})
    assert raw.status_code == 400 and raw.json()["error_codes"] == [700016]


def test_device_sign_in_page(tenant, http):
    page = http.get(f"{tenant.base_url}/devicelogin")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    flow = _public(tenant, http).initiate_device_flow(scopes=READ_SCOPE)
    upn = _upn(tenant)
    signed_in = http.post(f"{tenant.base_url}/devicelogin",
                          data={"code": flow["user_code"].lower(), "username": upn, "action": "approve"})
    assert signed_in.status_code == 200 and upn in signed_in.text
    assert flow["user_code"] not in tenant.pending_device_codes()
    again = http.post(f"{tenant.base_url}/devicelogin",
                      data={"code": flow["user_code"], "username": upn, "action": "approve"})
    assert again.status_code == 400


# ---------------------------------------------------------------------------
# refresh tokens


@pytest.fixture
def signed_in(tenant, http):
    """(app, account, device-flow result) of a user signed in through the device flow."""
    app, _, result = _device_sign_in(tenant, http, _upn(tenant, 1))
    [account] = app.get_accounts()
    return app, account, result


def test_refresh_after_expire_tokens_gives_new_tokens_graph_accepts(tenant, http, signed_in):
    app, account, first = signed_in
    assert _users(http, tenant, first["access_token"]).status_code == 200
    tenant.expire_tokens()
    rejected = _users(http, tenant, first["access_token"])
    assert rejected.status_code == 401
    assert rejected.json()["error"]["message"] == "Lifetime validation failed, the token is expired."
    renewed = app.acquire_token_silent(READ_SCOPE, account, force_refresh=True)
    assert renewed["token_source"] == "identity_provider" and renewed["access_token"] != first["access_token"]
    assert _users(http, tenant, renewed["access_token"]).status_code == 200
    new_rt = http.posts[-1]
    assert new_rt[1]["refresh_token"] == first["refresh_token"] and new_rt[2] == 200
    [stored] = list(app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN))
    assert stored["secret"] != first["refresh_token"] and stored["secret"] in tenant.issued_credentials()
    # As in Entra, the old refresh token stays valid until its own expiry.
    old = http.post(f"{tenant.authority}/oauth2/v2.0/token", data={
        "grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": first["refresh_token"],
        "scope": f"{READ_SCOPE[0]} offline_access"})
    assert old.status_code == 200 and old.json()["refresh_token"] != first["refresh_token"]
    assert "id_token" not in old.json() and "client_info" not in old.json()  # neither openid nor client_info=1


def test_expired_refresh_tokens(tenant, http, signed_in):
    app, account, _ = signed_in
    tenant.expire_refresh_tokens()
    assert app.acquire_token_silent(READ_SCOPE, account, force_refresh=True) is None
    result = app.acquire_token_silent_with_error(READ_SCOPE, account, force_refresh=True)
    _assert_error(result, "invalid_grant", 700082, "The refresh token has expired due to inactivity.")
    assert "inactive for 90.00:00:00" in result["error_description"]


def test_refresh_token_ttl(tenant, http, signed_in, monkeypatch):
    app, account, first = signed_in
    monkeypatch.setattr(tenant, "refresh_token_ttl", 0)
    renewed = app.acquire_token_silent(READ_SCOPE, account, force_refresh=True)  # the old one lives on
    assert renewed and renewed["access_token"] != first["access_token"]
    result = app.acquire_token_silent_with_error(READ_SCOPE, account, force_refresh=True)  # issued with ttl 0
    _assert_error(result, "invalid_grant", 700082)


def test_revoked_sign_in_sessions(tenant, http, signed_in):
    app, account, first = signed_in
    tenant.revoke_sign_in_sessions(_upn(tenant, 2))  # someone else: no effect
    assert app.acquire_token_silent(READ_SCOPE, account, force_refresh=True) is not None
    tenant.revoke_sign_in_sessions(account["username"].upper())
    assert app.acquire_token_silent(READ_SCOPE, account, force_refresh=True) is None
    result = app.acquire_token_silent_with_error(READ_SCOPE, account, force_refresh=True)
    _assert_error(result, "invalid_grant", 50173,
                  "The provided grant has expired due to it being revoked, a fresh auth token is needed.")
    # Access tokens already issued stay valid until they expire, as in Entra.
    assert _users(http, tenant, first["access_token"]).status_code == 200


def test_refresh_is_bound_to_the_client_and_a_live_account(tenant, http, signed_in):
    _, account, first = signed_in
    url = f"{tenant.authority}/oauth2/v2.0/token"
    form = {"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": first["refresh_token"],
            "scope": READ_SCOPE[0]}
    other = http.post(url, data={**form, "client_id": str(uuid.uuid4())})
    assert other.status_code == 400 and other.json()["error_codes"] == [700016]
    bogus = http.post(url, data={**form, "refresh_token": "emu.rt.not-issued"})
    assert bogus.status_code == 400 and bogus.json()["error"] == "invalid_grant"
    assert bogus.json()["error_codes"] == [9002313]
    user_id = account["local_account_id"]
    tenant.update_user(user_id, {"accountEnabled": False})
    try:
        disabled = http.post(url, data=form)
        assert disabled.status_code == 400 and disabled.json()["error_codes"] == [50057]
    finally:
        tenant.update_user(user_id, {"accountEnabled": True})
    assert http.post(url, data=form).status_code == 200


# ---------------------------------------------------------------------------
# scopes on delegated tokens


def test_delegated_token_without_directory_read_all_is_forbidden(tenant, http):
    _, _, result = _device_sign_in(tenant, http, _upn(tenant, 3), scopes=["User.Read"])
    assert result["scope"] == "User.Read profile openid"  # short names come back short
    forbidden = _users(http, tenant, result["access_token"])
    assert forbidden.status_code == 403
    error = forbidden.json()["error"]
    assert error["code"] == "Authorization_RequestDenied"
    assert error["message"] == "Insufficient privileges to complete the operation."
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    # Inside $batch the outer request is refused the same way.
    batch = http.post(f"{tenant.graph_url}/$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/users"}]},
                      headers={"Authorization": f"Bearer {result['access_token']}"})
    assert batch.status_code == 403


def test_delegated_default_scope_grants_the_consented_permissions(tenant, http, monkeypatch):
    _, _, result = _device_sign_in(tenant, http, _upn(tenant, 4), scopes=[f"{tenant.base_url}/.default"],
                                   exclude_scopes=["offline_access"])
    assert result["scope"] == (f"{tenant.base_url}/User.Read {tenant.base_url}/Directory.Read.All "
                               f"{tenant.base_url}/.default profile openid")
    assert "refresh_token" not in result  # no offline_access, no refresh token
    assert _users(http, tenant, result["access_token"]).status_code == 200
    monkeypatch.setattr(tenant, "delegated_permissions", ("User.Read",))
    _, _, narrow = _device_sign_in(tenant, http, _upn(tenant, 4), scopes=[f"{GRAPH}/.default"])
    assert narrow["scope"] == f"{GRAPH}/User.Read {GRAPH}/.default profile openid"
    assert _users(http, tenant, narrow["access_token"]).status_code == 403


def test_app_tokens_keep_working_and_expire_tokens_ends_every_kind(tenant, http, registered):
    key_pem, _, _, thumbprint = registered
    app_token = _confidential(tenant, http, {"private_key": key_pem, "thumbprint": thumbprint}) \
        .acquire_token_for_client(scopes=APP_SCOPE)["access_token"]
    secret_token = _confidential(tenant, http, SECRET).acquire_token_for_client(scopes=APP_SCOPE)["access_token"]
    _, _, user = _device_sign_in(tenant, http, _upn(tenant, 5))
    tokens = (app_token, secret_token, user["access_token"])
    assert [_users(http, tenant, t).status_code for t in tokens] == [200, 200, 200]
    tenant.expire_tokens()
    assert [_users(http, tenant, t).status_code for t in tokens] == [401, 401, 401]
    issued = tenant.issued_credentials()
    assert all(t in issued for t in tokens)
    assert SECRET not in issued and hashlib.sha256(SECRET.encode()).hexdigest() not in issued


# ---------------------------------------------------------------------------
# the standalone demo tenant


def test_cli_registers_certificates(tmp_path):
    key_pem, cert_pem, cert = _certificate()
    cert_path = tmp_path / "app.pem"
    cert_path.write_text(cert_pem)
    state_dir = tmp_path / "state"
    command = [sys.executable, "-m", "entra_pipeline.emulator", "serve", "--users", "40", "--groups", "18",
               "--state-dir", str(state_dir), "--idle-timeout", "60"]
    repo = Path(__file__).resolve().parents[2]
    bad = subprocess.run([*command, "--certificate", str(tmp_path / "missing.pem")], cwd=repo,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "missing.pem" in bad.stderr
    proc = subprocess.Popen([*command, "--certificate", str(cert_path)], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "state.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the emulator did not start"
            time.sleep(0.05)
        state = json.loads((state_dir / "state.json").read_text())
        thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
        assert state["certificate_thumbprints"] == [thumbprint]
        assert state["device_login_url"] == f"{state['base_url']}/devicelogin"
        with RecordingSession(state["ca_path"]) as http:
            app = msal.ConfidentialClientApplication(
                state["client_id"], client_credential={"private_key": key_pem, "thumbprint": thumbprint},
                authority=state["authority"], instance_discovery=False, http_client=http)
            assert "access_token" in app.acquire_token_for_client(scopes=APP_SCOPE)
    finally:
        proc.terminate()
        stdout, _ = proc.communicate(timeout=20)
    assert thumbprint in stdout and "/devicelogin" in stdout
