"""Identity-platform pieces of the demo tenant that do not need the server.

Certificate credentials (key credentials of the app and the check of a client
assertion), delegated scopes, device authorizations, refresh grants, and the
id_token / client_info a public client needs to build an account. The token
endpoint that ties them together lives in :mod:`.server`.

Error codes follow Microsoft's published AADSTS list where it has one
(reference-error-codes); the few it does not document are marked "plausible".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Collection, Iterable

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "ASSERTION_ALGORITHMS",
    "CLIENT_ASSERTION_TYPE",
    "CLOCK_SKEW",
    "DEFAULT_DELEGATED_PERMISSIONS",
    "DEVICE_CODE_GRANT",
    "DEVICE_CODE_INTERVAL",
    "DEVICE_CODE_TTL",
    "GRAPH_READ_PERMISSIONS",
    "GRAPH_RESOURCE",
    "REFRESH_TOKEN_TTL",
    "AccessToken",
    "DelegatedGrant",
    "DeviceAuthorization",
    "IdentityError",
    "KeyCredential",
    "KeyCredentials",
    "RefreshGrant",
    "SignedInUser",
    "client_info",
    "duration_text",
    "id_token",
    "parse_delegated_scope",
    "verify_client_assertion",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: What Entra accepts for a certificate's client assertion (MSAL: PS256 with x5t#S256, RS256 with x5t).
ASSERTION_ALGORITHMS = ("RS256", "PS256")
#: Seconds of clock skew tolerated on a client assertion's exp and nbf.
CLOCK_SKEW = 300
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
#: Delegated Graph permissions admin-consented for the app: what ``{graph}/.default`` grants a user.
DEFAULT_DELEGATED_PERMISSIONS = ("User.Read", "Directory.Read.All")
#: Any of these lets a delegated token read the directory (lower case).
GRAPH_READ_PERMISSIONS = frozenset({"directory.read.all", "directory.readwrite.all", "directory.accessasuser.all"})
DEVICE_CODE_TTL = 900
DEVICE_CODE_INTERVAL = 5
REFRESH_TOKEN_TTL = 90 * 24 * 3600
ID_TOKEN_TTL = 3600

_OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
# Echoed in a token response's scope in this order; offline_access never is (as in Entra).
_ECHOED_OIDC = ("profile", "openid", "email")
_PERMISSION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
# Entra's user codes are 8-9 characters; no 0/O or 1/I so they survive being read aloud.
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class IdentityError(Exception):
    """An identity-platform error answer: HTTP status, OAuth ``error``, AADSTS code, description."""

    def __init__(self, status: int, error: str, aadsts: int, description: str):
        super().__init__(description)
        self.status, self.error, self.aadsts, self.description = status, error, aadsts, description


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_text(seconds: float) -> str:
    """A duration as Entra prints one (.NET TimeSpan: ``90.00:00:00``)."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02}:{minutes:02}:{secs:02}"
    return f"{days}.{clock}" if days else clock


# -- certificate credentials ---------------------------------------------------


@dataclass(frozen=True)
class KeyCredential:
    """A public certificate registered on the app (``keyCredentials`` in Graph)."""

    thumbprint: str  # SHA-1 of the DER certificate, upper-case hex (what the portal shows)
    sha1: bytes  # what an assertion's x5t encodes
    sha256: bytes  # what an assertion's x5t#S256 encodes
    public_key: object
    not_before: datetime
    not_after: datetime


class KeyCredentials:
    """The app's certificates, found by the ``x5t`` / ``x5t#S256`` of an assertion's header."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_thumbprint: dict[str, KeyCredential] = {}

    def add(self, cert_pem: bytes | str) -> str:
        data = cert_pem.encode("ascii") if isinstance(cert_pem, str) else bytes(cert_pem)
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise ValueError(f"not a PEM X.509 certificate: {exc}") from None
        der = cert.public_bytes(serialization.Encoding.DER)
        sha1, sha256 = hashlib.sha1(der).digest(), hashlib.sha256(der).digest()
        credential = KeyCredential(
            thumbprint=sha1.hex().upper(), sha1=sha1, sha256=sha256,
            public_key=cert.public_key(), not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc)
        with self._lock:
            self._by_thumbprint[credential.thumbprint] = credential
        return credential.thumbprint

    def remove(self, thumbprint: str) -> None:
        key = thumbprint.replace(":", "").replace(" ", "").upper()
        with self._lock:
            if key not in self._by_thumbprint:
                raise KeyError(f"no certificate with thumbprint {thumbprint!r} is registered")
            del self._by_thumbprint[key]

    def thumbprints(self) -> list[str]:
        with self._lock:
            return list(self._by_thumbprint)

    def find(self, x5t: str | None, x5t_s256: str | None) -> KeyCredential | None:
        # Digests, not strings, are compared: MSAL keeps base64's "=" padding, JOSE drops it.
        # x5t#S256 wins when both are sent.
        wanted, attribute = (x5t_s256, "sha256") if x5t_s256 is not None else (x5t, "sha1")
        digest = _decoded(wanted)
        if digest is None:
            return None
        with self._lock:
            for credential in self._by_thumbprint.values():
                if getattr(credential, attribute) == digest:
                    return credential
        return None


def _decoded(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return _unb64url(value.rstrip("="))
    except (ValueError, binascii.Error):
        return None


def _client_thumbprint(x5t: str | None, x5t_s256: str | None) -> str:
    """The key identifier the client sent, as Entra prints it in errors (hex)."""
    value = x5t_s256 if x5t_s256 is not None else x5t
    digest = _decoded(value)
    return digest.hex().upper() if digest is not None else (value or "")


def verify_client_assertion(assertion: str, keys: KeyCredentials, *, client_id: str,
                            audiences: Collection[str], now: float | None = None) -> KeyCredential:
    """Check a certificate's client assertion like Entra; returns the key that signed it.

    Order: JWT shape, algorithm, key lookup, key validity, signature, then the
    claims (aud, iss, sub, exp/nbf). ``jti`` is not checked for replay: MSAL
    reuses one assertion for up to ten minutes.
    """
    now = time.time() if now is None else now

    def malformed(why: str) -> IdentityError:
        return IdentityError(401, "invalid_client", 50027, f"JWT token is invalid or malformed. {why}")

    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        raise malformed("A JWT must have three base64url-encoded parts separated by dots.")
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise malformed("The header or payload is not base64url-encoded JSON.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise malformed("The header and payload must be JSON objects.")

    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        # AADSTS5002738 is what Entra answers for e.g. ES256 (not in the published table: plausible).
        raise IdentityError(401, "invalid_client", 5002738,
                            f"Invalid JWT token. '{alg}' is not a supported signature algorithm. "
                            f"Supported signing algorithms are: '{', '.join(ASSERTION_ALGORITHMS)}'")
    x5t, x5t_s256 = header.get("x5t"), header.get("x5t#S256")
    if not isinstance(x5t, str):
        x5t = None
    if not isinstance(x5t_s256, str):
        x5t_s256 = None
    if x5t is None and x5t_s256 is None:
        raise IdentityError(401, "invalid_client", 700027,
                            "Client assertion failed signature validation. [Reason - The key identifier is "
                            "missing: the JWT header has neither 'x5t' nor 'x5t#S256'.]")
    used = _client_thumbprint(x5t, x5t_s256)
    key = keys.find(x5t, x5t_s256)
    if key is None:
        raise IdentityError(
            401, "invalid_client", 700027,
            "The certificate with identifier used to sign the client assertion is not registered on "
            f"application. [Reason - The key was not found., Thumbprint of key used by client: '{used}', "
            f"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys "
            f"for app Id '{client_id}'.]")
    found = f"Found key 'Start={key.not_before:%m/%d/%Y %H:%M:%S}, End={key.not_after:%m/%d/%Y %H:%M:%S}'"
    moment = datetime.fromtimestamp(now, timezone.utc)
    if moment >= key.not_after:
        raise IdentityError(401, "invalid_client", 700027,
                            "Client assertion contains an invalid signature. [Reason - The key used is "
                            f"expired., Thumbprint of key used by client: '{used}', {found}]")
    if moment < key.not_before:
        raise IdentityError(401, "invalid_client", 700027,
                            "Client assertion contains an invalid signature. [Reason - The key used is "
                            f"not yet valid., Thumbprint of key used by client: '{used}', {found}]")
    try:
        jwt.decode(assertion, key.public_key, algorithms=[alg],
                   options={"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                            "verify_iat": False, "verify_aud": False, "verify_iss": False})
    except (jwt.PyJWTError, TypeError, ValueError):
        # PyJWT raises TypeError for a key of the wrong type (e.g. an EC certificate with RS256).
        raise IdentityError(401, "invalid_client", 700027,
                            "Client assertion failed signature validation. [Reason - The provided signature "
                            "value did not match the expected signature value., Thumbprint of key used by "
                            f"client: '{used}', {found}]") from None

    aud = claims.get("aud")
    if not (isinstance(aud, str) and aud in audiences
            or isinstance(aud, list) and any(isinstance(a, str) and a in audiences for a in aud)):
        raise malformed(f"The 'aud' claim '{aud}' is not this tenant's token endpoint.")
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or iss.lower() != client_id.lower():
        # Not in the published table: plausible.
        raise IdentityError(401, "invalid_client", 700021,
                            "Client assertion application identifier doesn't match 'client_id' parameter.")
    if sub != iss:
        raise IdentityError(401, "invalid_client", 50048,
                            "Subject mismatches Issuer claim in the client assertion.")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise malformed("The required claim 'exp' is missing or not a number.")
    if nbf is not None and (isinstance(nbf, bool) or not isinstance(nbf, (int, float))):
        raise malformed("The claim 'nbf' is not a number.")
    if exp + CLOCK_SKEW <= now or (nbf is not None and nbf - CLOCK_SKEW > now):
        raise IdentityError(
            401, "invalid_client", 700024,
            f"Client assertion is not within its valid time range. Current time: {_iso(now)}, assertion "
            f"valid from {_iso(nbf) if nbf is not None else 'unspecified'}, expiry time of assertion "
            f"{_iso(exp)}.")
    return key


# -- delegated scopes ------------------------------------------------------------


@dataclass(frozen=True)
class DelegatedGrant:
    """What a user's token grants: Graph permissions (as the client spelled them) and OIDC scopes."""

    permissions: tuple[str, ...]  # echoed in the token response, e.g. "https://graph.microsoft.com/User.Read"
    names: frozenset[str]  # the permission names alone, lower case: what Graph checks
    oidc: frozenset[str]

    @property
    def offline(self) -> bool:
        return "offline_access" in self.oidc

    @property
    def scope(self) -> str:
        """The response's ``scope``: permissions in the requested form, then profile/openid/email."""
        return " ".join([*self.permissions, *(s for s in _ECHOED_OIDC if s in self.oidc)])


def _invalid_scope(scope: str, why: str) -> IdentityError:
    return IdentityError(400, "invalid_scope", 70011,
                         f"The provided value for the input parameter 'scope' is not valid. The scope '{scope}' "
                         f"is not valid. {why}")


def parse_delegated_scope(scope: str, graph_resources: Iterable[str],
                          consented: Iterable[str], tenant: str) -> DelegatedGrant:
    """Parse a delegated request's ``scope``: Graph permissions, by short name (``User.Read``) or
    resource-qualified (``https://graph.microsoft.com/User.Read``; any of ``graph_resources``), or
    ``{graph}/.default`` (the ``consented`` permissions), plus openid/profile/email/offline_access.

    Entra echoes scopes in the form the client sent them, which keeps MSAL's cache lookups working.
    """
    resources = {r.rstrip("/").lower() for r in graph_resources}
    requested: list[tuple[str, str]] = []  # (prefix as sent, permission name)
    defaults: list[str] = []  # prefixes of .default scopes
    oidc = set()
    for item in scope.split():
        if item.lower() in _OIDC_SCOPES:
            oidc.add(item.lower())
            continue
        prefix, _, name = item.rpartition("/")
        if prefix:
            if prefix.rstrip("/").lower() not in resources:
                raise IdentityError(
                    400, "invalid_resource", 500011,
                    f"The resource principal named {prefix} was not found in the tenant named {tenant}. "
                    "This can happen if the application has not been installed by the administrator of the "
                    "tenant or consented to by any user in the tenant. You might have sent your "
                    "authentication request to the wrong tenant.")
            prefix += "/"
        if name.lower() == ".default":
            defaults.append(prefix)
        elif _PERMISSION_RE.match(name):
            requested.append((prefix, name))
        else:
            raise _invalid_scope(scope, f"'{item}' is not a permission of Microsoft Graph.")
    if defaults and requested:
        raise _invalid_scope(scope, "The .default scope can't be combined with resource-specific scopes.")
    if defaults:
        prefix = defaults[0]
        requested = [(prefix, name) for name in consented]
    permissions, names = [], set()
    for prefix, name in requested:
        if name.lower() not in names:
            names.add(name.lower())
            permissions.append(prefix + name)
    if defaults:
        permissions.append(defaults[0] + ".default")
    return DelegatedGrant(tuple(permissions), frozenset(names), frozenset(oidc))


# -- issued credentials -------------------------------------------------------------


@dataclass
class AccessToken:
    """What the server remembers of an issued access token (``Emulator._tokens`` values)."""

    expires: float  # time.monotonic() deadline
    grant: DelegatedGrant | None = None  # None: an app token (client credentials)
    user_id: str | None = None


@dataclass(frozen=True)
class SignedInUser:
    id: str
    user_principal_name: str
    display_name: str


@dataclass
class DeviceAuthorization:
    """One device-code sign-in, from ``/devicecode`` to its redemption."""

    device_code: str
    user_code: str
    client_id: str
    grant: DelegatedGrant
    expires: float  # time.monotonic() deadline
    state: str = "pending"  # pending | approved | declined | redeemed
    user: SignedInUser | None = None

    @staticmethod
    def new_user_code() -> str:
        return "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))


@dataclass
class RefreshGrant:
    """A refresh token's server side: whose, for which client, until when."""

    client_id: str
    user: SignedInUser
    # Kept so a refresh without ``scope`` gets what was granted before (RFC 6749 section 6).
    grant: DelegatedGrant
    issued_at: float  # time.time(), for error messages
    expires: float  # time.monotonic() deadline
    revoked_at: float | None = None  # time.time() of revokeSignInSessions


# -- what a public client needs to build an account ------------------------------------


def client_info(user_id: str, tenant_id: str) -> str:
    """``client_info``: base64url JSON; MSAL's home_account_id is ``{uid}.{utid}``."""
    return _b64url(json.dumps({"uid": user_id, "utid": tenant_id}, separators=(",", ":")).encode())


def id_token(key: bytes, *, issuer: str, client_id: str, tenant_id: str, user: SignedInUser,
             now: float | None = None) -> str:
    """An id_token with Entra's v2.0 claims, HMAC-signed with a key only the server knows.

    MSAL decodes id_tokens without verifying them (msal/oauth2cli/oidc.py), so an HS256
    signature is enough for it; clients cannot verify it (the JWKS is empty).
    """
    now = int(time.time() if now is None else now)
    # Entra's sub is pairwise: stable per user and app, different across apps.
    sub = _b64url(hashlib.sha256(f"{client_id}:{user.id}".encode()).digest())
    claims = {
        "aud": client_id,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_TTL,
        "name": user.display_name,
        "oid": user.id,
        "preferred_username": user.user_principal_name,
        "sub": sub,
        "tid": tenant_id,
        "uti": _b64url(secrets.token_bytes(16)),
        "ver": "2.0",
    }
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": "demo-tenant-hs256"})
