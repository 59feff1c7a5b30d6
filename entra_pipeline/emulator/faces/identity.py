"""The Microsoft identity platform of the demo tenant: OIDC discovery, the token endpoint
(client secret, certificate, device code, refresh token), device sign-in, and the registry of
every token issued, which the Graph face checks access tokens against."""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from urllib.parse import parse_qsl, unquote, unquote_plus

from ..model import INITIAL_DOMAIN, TENANT_DOMAIN
from ..identity import (
    CLIENT_ASSERTION_TYPE,
    DEVICE_CODE_GRANT,
    GRAPH_RESOURCE,
    AccessToken,
    DelegatedGrant,
    DeviceAuthorization,
    IdentityError,
    KeyCredentials,
    RefreshGrant,
    SignedInUser,
    client_info,
    duration_text,
    id_token,
    parse_delegated_scope,
    verify_client_assertion,
)
from ..transport import IDENTITY_CONTENT_TYPE, Request, Response, common_headers, json_body

# Graph's own application id: real 401s name it in WWW-Authenticate.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
PATH_RE = re.compile(r"^/[^/]+/(?:v2\.0/\.well-known/|oauth2/|discovery/)")


def form_fields(request: Request) -> dict[str, str]:
    """The fields of a form-encoded request body ({} when it is not UTF-8)."""
    try:
        return dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


class IdentityFace:
    """Answers the identity-platform endpoints of the emulator (settings such as ``token_ttl``
    are read from it) and keeps the tokens, refresh tokens and device codes it issued."""

    def __init__(self, emulator, client_secret: str) -> None:
        self.emulator = emulator
        self._client_secret = client_secret
        # Access token -> AccessToken. Under ``lock`` with the refresh tokens, device codes and
        # the log of everything issued (issued_credentials()).
        self.tokens: dict[str, AccessToken] = {}
        self.lock = threading.Lock()
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.device_codes: dict[str, DeviceAuthorization] = {}
        self.user_codes: dict[str, str] = {}  # user code -> device code
        self.issued: list[str] = []
        self.key_credentials = KeyCredentials()
        self._id_token_key = secrets.token_bytes(32)

    def access_token(self, token: str) -> AccessToken | None:
        """What was issued as ``token`` (None: never issued, or forgotten long after it expired)."""
        with self.lock:
            return self.tokens.get(token)

    def record_issued(self, credential: str) -> None:
        """Remember a credential another face issued (Workday tokens), for issued_credentials()."""
        with self.lock:
            self.issued.append(credential)

    # -- test API (documented on the emulator, whose control methods delegate here) ----

    def expire_tokens(self) -> None:
        with self.lock:
            for record in self.tokens.values():
                record.expires = 0.0

    def add_certificate(self, cert_pem: bytes | str) -> str:
        return self.key_credentials.add(cert_pem)

    def remove_certificate(self, thumbprint: str) -> None:
        self.key_credentials.remove(thumbprint)

    def pending_device_codes(self) -> list[str]:
        now = time.monotonic()
        with self.lock:
            return [d.user_code for d in self.device_codes.values()
                    if d.state == "pending" and now < d.expires]

    def approve_device_code(self, user_code: str, user_principal_name: str) -> None:
        with self.emulator.state_lock:
            user = self.emulator.directory.user_by_upn(user_principal_name)
        if user is None:
            raise KeyError(f"no user {user_principal_name!r} in the directory")
        if not user.get("accountEnabled", True):
            raise ValueError(f"the account {user_principal_name!r} is disabled")
        signed_in = SignedInUser(user["id"], user["userPrincipalName"],
                                 user.get("displayName") or user["userPrincipalName"])
        with self.lock:
            pending = self._pending(user_code)
            pending.state, pending.user = "approved", signed_in

    def decline_device_code(self, user_code: str) -> None:
        with self.lock:
            self._pending(user_code).state = "declined"

    def expire_device_codes(self) -> None:
        with self.lock:
            for pending in self.device_codes.values():
                pending.expires = 0.0

    def _pending(self, user_code: str) -> DeviceAuthorization:
        device_code = self.user_codes.get(user_code.strip().upper().replace("-", ""))
        pending = self.device_codes.get(device_code) if device_code else None
        if pending is None or pending.state != "pending" or time.monotonic() >= pending.expires:
            raise KeyError(f"no pending device sign-in with user code {user_code!r}")
        return pending

    def expire_refresh_tokens(self) -> None:
        with self.lock:
            for grant in self.refresh_tokens.values():
                grant.expires = 0.0

    def revoke_sign_in_sessions(self, user_principal_name: str | None = None) -> None:
        wanted = None if user_principal_name is None else user_principal_name.lower()
        now = time.time()
        with self.lock:
            for grant in self.refresh_tokens.values():
                if grant.revoked_at is None and (wanted is None or grant.user.user_principal_name.lower() == wanted):
                    grant.revoked_at = now

    def issued_credentials(self) -> list[str]:
        with self.lock:
            return list(self.issued)

    # -- identity platform ----------------------------------------------------

    _OIDC_RE = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")
    _TOKEN_RE = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
    _DEVICECODE_RE = re.compile(r"^/([^/]+)/oauth2/v2\.0/devicecode$")
    _KEYS_RE = re.compile(r"^/([^/]+)/discovery/v2\.0/keys$")
    _GRANT_TYPES = ("client_credentials", "refresh_token", DEVICE_CODE_GRANT)

    def _known_tenant(self, tenant: str) -> bool:
        return unquote(tenant).lower() in (self.emulator.tenant_id, INITIAL_DOMAIN, TENANT_DOMAIN)

    def answer(self, request: Request) -> Response:
        """Answer a request to an identity-platform path (discovery, token, device code, keys)."""
        path = request.path
        try:
            for pattern, method, handler in (
                (self._OIDC_RE, "GET", self._openid_configuration),
                (self._TOKEN_RE, "POST", self._token),
                (self._DEVICECODE_RE, "POST", self._devicecode),
                (self._KEYS_RE, "GET", self._keys),
            ):
                match = pattern.match(path)
                if match:
                    if request.method != method:
                        raise IdentityError(405, "invalid_request", 900561,
                                            f"The endpoint only accepts {method} requests.")
                    return handler(request, match.group(1))
            raise IdentityError(404, "invalid_request", 900000,
                                f"No identity-platform endpoint at '{path}' on the demo-tenant emulator.")
        except IdentityError as exc:
            return self.error(request, exc)

    def _identity_json(self, request: Request, payload: dict, status: int = 200) -> Response:
        headers = common_headers(request, IDENTITY_CONTENT_TYPE)
        headers += [("x-ms-request-id", request.request_id), ("Pragma", "no-cache")]
        return Response(status, json_body(payload), headers)

    def error(self, request: Request, exc: IdentityError) -> Response:
        """Entra's error body for ``exc``: AADSTS code, trace and correlation ids, timestamp."""
        timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        payload = {
            "error": exc.error,
            "error_description": (
                f"AADSTS{exc.aadsts}: {exc.description} Trace ID: {request.request_id} "
                f"Correlation ID: {request.client_request_id} Timestamp: {timestamp}"
            ),
            "error_codes": [exc.aadsts],
            "timestamp": timestamp,
            "trace_id": request.request_id,
            "correlation_id": request.client_request_id,
            "error_uri": f"{self.emulator.base_url}/error?code={exc.aadsts}",
        }
        return self._identity_json(request, payload, exc.status)

    def _unknown_tenant(self, tenant: str, error: str) -> IdentityError:
        return IdentityError(
            400, error, 90002,
            f"Tenant '{unquote(tenant)}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    def _openid_configuration(self, request: Request, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_tenant")
        base, tid = self.emulator.base_url, self.emulator.tenant_id
        host = base.split("://", 1)[1]
        return self._identity_json(request, {
            "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name",
                                 "tid", "ver", "oid", "preferred_username", "email"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": host,
            "cloud_graph_host_name": host,
            "msgraph_host": host,
        })

    def _keys(self, request: Request, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_tenant")
        return self._identity_json(request, {"keys": []})

    @staticmethod
    def _missing(name: str, status: int = 400, error: str = "invalid_request") -> IdentityError:
        return IdentityError(status, error, 900144,
                             f"The request body must contain the following parameter: '{name}'.")

    def _check_client_id(self, form: dict[str, str]) -> str:
        client_id = form.get("client_id", "")
        if not client_id:
            raise self._missing("client_id")
        if client_id.lower() != self.emulator.client_id:
            raise IdentityError(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{INITIAL_DOMAIN}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may have "
                "sent your authentication request to the wrong tenant.",
            )
        return client_id

    def _token_audiences(self, tenant: str) -> set[str]:
        """What a client assertion's ``aud`` may be: this tenant's token endpoint (v2.0 or v1), by id or domain."""
        names = {self.emulator.tenant_id, INITIAL_DOMAIN, TENANT_DOMAIN, unquote(tenant).lower()}
        return {f"{self.emulator.base_url}/{name}/oauth2{version}/token" for name in names for version in ("/v2.0", "")}

    def _authenticate_client(self, form: dict[str, str], tenant: str, *, required: bool) -> str | None:
        """Check the client credential: "secret", "certificate", or None for a public client."""
        secret = form.get("client_secret")
        assertion, assertion_type = form.get("client_assertion"), form.get("client_assertion_type")
        if assertion is not None or assertion_type is not None:
            if secret:
                raise IdentityError(400, "invalid_request", 90023,
                                    "The request presents both 'client_secret' and 'client_assertion'; "
                                    "send one client credential.")
            if not assertion_type:
                raise self._missing("client_assertion_type")
            if assertion_type != CLIENT_ASSERTION_TYPE:
                raise IdentityError(400, "invalid_request", 90023,
                                    f"The client_assertion_type '{assertion_type}' is not supported: use "
                                    f"'{CLIENT_ASSERTION_TYPE}'.")
            if not assertion:
                raise self._missing("client_assertion", 401, "invalid_client")
            verify_client_assertion(assertion, self.key_credentials, client_id=self.emulator.client_id,
                                    audiences=self._token_audiences(tenant))
            return "certificate"
        if secret:
            if not hmac.compare_digest(secret.encode("utf-8"), self._client_secret.encode("utf-8")):
                raise IdentityError(
                    401, "invalid_client", 7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the "
                    "client secret value, not the client secret ID, for a secret added to app "
                    f"'{self.emulator.client_id}'.",
                )
            return "secret"
        if required or not self.emulator.allow_public_client:
            raise IdentityError(401, "invalid_client", 7000218,
                                "The request body must contain the following parameter: "
                                "'client_assertion' or 'client_secret'.")
        return None

    def _token(self, request: Request, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_request")
        form = form_fields(request)
        basic = request.headers.get("Authorization") or ""
        if basic[:6].lower() == "basic ":
            # client_secret_basic: URL-encoded id and secret in the Authorization header.
            try:
                user, _, password = base64.b64decode(basic[6:].strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise IdentityError(401, "invalid_client", 7000216,
                                    "The Authorization header is not valid Basic authentication.") from None
            form.setdefault("client_id", unquote_plus(user))
            form.setdefault("client_secret", unquote_plus(password))

        grant_type = form.get("grant_type")
        if not grant_type:
            raise self._missing("grant_type")
        if grant_type not in self._GRANT_TYPES:
            raise IdentityError(400, "unsupported_grant_type", 70003,
                                f"The app requested an unsupported grant type '{grant_type}'. The demo-tenant "
                                f"emulator supports {', '.join(self._GRANT_TYPES)}.")
        client_id = self._check_client_id(form)
        if grant_type == "client_credentials":
            return self._client_credentials(request, tenant, form)
        self._authenticate_client(form, tenant, required=False)
        if grant_type == "refresh_token":
            return self._refresh(request, client_id, form)
        return self._redeem_device_code(request, client_id, form)

    def _client_credentials(self, request: Request, tenant: str, form: dict[str, str]) -> Response:
        self._authenticate_client(form, tenant, required=True)
        scope = form.get("scope", "").strip()
        if not scope:
            raise self._missing("scope")
        if " " in scope or not scope.endswith("/.default"):
            raise IdentityError(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        return self._identity_json(request, self._issue_access_token(None, None))

    def _issue_access_token(self, grant: DelegatedGrant | None, user_id: str | None) -> dict:
        """A new access token in the registry; the ``token_type``/``expires_in`` part of the answer."""
        token = "emu." + secrets.token_urlsafe(32)
        now = time.monotonic()
        with self.lock:
            # Forget tokens that expired long ago; recently expired ones still get "expired".
            stale = [t for t, record in self.tokens.items() if record.expires < now - 3600]
            for t in stale:
                del self.tokens[t]
            self.tokens[token] = AccessToken(now + self.emulator.token_ttl, grant, user_id)
            self.issued.append(token)
        ttl, reported = self.emulator.token_ttl, self.emulator.token_reported_ttl
        reported = ttl if reported is None else reported
        payload = {"token_type": "Bearer"}
        if grant is not None:
            payload["scope"] = grant.scope
        payload.update({"expires_in": reported, "ext_expires_in": reported, "access_token": token})
        return payload

    def _user_tokens(self, form: dict[str, str], client_id: str, user: SignedInUser,
                     grant: DelegatedGrant, *, refresh: bool) -> dict:
        """The answer of a delegated grant: access token, then refresh token, id_token, client_info."""
        payload = self._issue_access_token(grant, user.id)
        if refresh or grant.offline:
            token = "emu.rt." + secrets.token_urlsafe(48)
            with self.lock:
                self.refresh_tokens[token] = RefreshGrant(
                    client_id.lower(), user, grant, time.time(), time.monotonic() + self.emulator.refresh_token_ttl)
                self.issued.append(token)
            payload["refresh_token"] = token
        if "openid" in grant.oidc:
            payload["id_token"] = id_token(self._id_token_key, issuer=f"{self.emulator.authority}/v2.0",
                                           client_id=client_id.lower(), tenant_id=self.emulator.tenant_id, user=user)
        if form.get("client_info") == "1":
            payload["client_info"] = client_info(user.id, self.emulator.tenant_id)
        return payload

    def _delegated_grant(self, scope: str) -> DelegatedGrant:
        return parse_delegated_scope(scope, (GRAPH_RESOURCE, GRAPH_APP_ID, self.emulator.base_url),
                                     self.emulator.delegated_permissions, INITIAL_DOMAIN)

    def _devicecode(self, request: Request, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_request")
        form = form_fields(request)
        client_id = self._check_client_id(form)
        scope = form.get("scope", "").strip()
        if not scope:
            raise self._missing("scope")
        grant = self._delegated_grant(scope)
        device_code = "emu.dc." + secrets.token_urlsafe(48)
        with self.lock:
            user_code = DeviceAuthorization.new_user_code()
            while user_code in self.user_codes:
                user_code = DeviceAuthorization.new_user_code()
            self.device_codes[device_code] = DeviceAuthorization(
                device_code, user_code, client_id.lower(), grant, time.monotonic() + self.emulator.device_code_ttl)
            self.user_codes[user_code] = device_code
            self.issued.append(device_code)
        uri = f"{self.emulator.base_url}/devicelogin"
        return self._identity_json(request, {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": uri,
            "expires_in": int(self.emulator.device_code_ttl),
            "interval": int(self.emulator.device_code_interval),
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                       f"{user_code} to authenticate.",
        })

    def _redeem_device_code(self, request: Request, client_id: str, form: dict[str, str]) -> Response:
        device_code = form.get("device_code") or form.get("code")  # MSAL sends both
        if not device_code:
            raise self._missing("device_code")
        with self.lock:
            pending = self.device_codes.get(device_code)
            if pending is None or pending.client_id != client_id.lower():
                raise IdentityError(400, "invalid_grant", 70000,
                                    "Provided grant is invalid or malformed: the device_code is unknown.")
            if pending.state == "redeemed":
                # Not in the published table for device codes: plausible.
                raise IdentityError(400, "invalid_grant", 70000,
                                    "Provided grant is invalid or malformed: the device_code was already "
                                    "redeemed. Start a new device sign-in.")
            if time.monotonic() >= pending.expires:
                raise IdentityError(400, "expired_token", 70019,
                                    "Verification code expired. Have the user retry the sign-in.")
            if pending.state == "declined":
                # Not in the published table for device flow: plausible.
                raise IdentityError(400, "authorization_declined", 65004,
                                    "User declined to consent to access the app.")
            if pending.state == "pending":
                raise IdentityError(400, "authorization_pending", 70016,
                                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
            pending.state = "redeemed"
            user, grant = pending.user, pending.grant
        return self._identity_json(request, self._user_tokens(form, client_id, user, grant, refresh=False))

    def _refresh(self, request: Request, client_id: str, form: dict[str, str]) -> Response:
        token = form.get("refresh_token")
        if not token:
            raise self._missing("refresh_token")
        with self.lock:
            previous = self.refresh_tokens.get(token)
        if previous is None:
            raise IdentityError(400, "invalid_grant", 9002313,
                                "Invalid request. Request is malformed or invalid: the refresh_token is not "
                                "one this tenant issued.")
        def when(epoch: float) -> str:
            return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")

        issued = when(previous.issued_at)
        if previous.client_id != client_id.lower():
            raise IdentityError(400, "invalid_grant", 70000,
                                "Provided grant is invalid or malformed: the refresh token was issued to "
                                "another client.")
        if previous.revoked_at is not None:
            raise IdentityError(
                400, "invalid_grant", 50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The "
                f"user might have changed or reset their password. The grant was issued on '{issued}' and "
                f"the TokensValidFrom date (before which tokens are not valid) for this user is "
                f"'{when(previous.revoked_at)}'.")
        if time.monotonic() >= previous.expires:
            raise IdentityError(
                400, "invalid_grant", 700082,
                f"The refresh token has expired due to inactivity. The token was issued on {issued} and was "
                f"inactive for {duration_text(self.emulator.refresh_token_ttl)}.")
        with self.emulator.state_lock:
            user = self.emulator.directory.user_by_id(previous.user.id)
        if user is None:
            raise IdentityError(400, "invalid_grant", 50034,
                                f"The user account {previous.user.user_principal_name} does not exist in "
                                f"the {INITIAL_DOMAIN} directory. To sign into this application, the account "
                                "must be added to the directory.")
        if not user.get("accountEnabled", True):
            raise IdentityError(400, "invalid_grant", 50057, "The user account is disabled.")
        scope = form.get("scope", "").strip()
        grant = self._delegated_grant(scope) if scope else previous.grant
        # Entra keeps the old refresh token valid until its own expiry: nothing is rotated out.
        return self._identity_json(request, self._user_tokens(form, client_id, previous.user, grant, refresh=True))
