"""Access tokens for Microsoft Graph from the identity platform, through MSAL.

One way to sign in per integration:

- ``ClientSecret`` and ``Certificate``: app-only access (client credentials, scope
  ``{graph}/.default``, application permission Directory.Read.All). MSAL caches the token in
  memory and renews it when under five minutes are left.
- ``DelegatedSignIn``: a service account signed in once with the device-code flow
  (:func:`sign_in_with_device_code`, the ``login`` command). MSAL's token cache, kept in a file
  only its owner can read, holds the refresh token with which every later run gets access tokens
  silently; when it is gone the run fails with the command to sign in again.

``token(force_refresh=True)`` drops the cached access token after Graph rejected it. No message
raised here contains a secret, a token or a private key.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import msal
import requests


class _MaskGrantCodes(logging.Filter):
    """MSAL's token cache logs each token request at DEBUG with secrets masked, but not the
    device code, which anyone could redeem for the tokens while the sign-in is pending."""

    _CODES = re.compile(r'("(?:device_code|code)":\s*)"[^"]*"')

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._CODES.sub(r'\1"********"', a) if isinstance(a, str) else a for a in record.args)
        return True


# A filter on the logger that creates the record, so it runs before any handler sees it.
logging.getLogger("msal.token_cache").addFilter(_MaskGrantCodes())


class AuthError(RuntimeError):
    """The identity platform refused to issue a token, or the sign-in cannot be used."""


@dataclass(frozen=True)
class ClientSecret:
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Certificate:
    """A certificate credential: the private key, and the certificate (gives MSAL the SHA-256
    thumbprint and PS256 assertions) or only its SHA-1 thumbprint (RS256 assertions)."""

    private_key_pem: str = field(repr=False)
    certificate_pem: str | None = None
    thumbprint: str | None = None
    passphrase: str | None = field(default=None, repr=False)

    def msal_credential(self) -> dict:
        credential: dict = {"private_key": self.private_key_pem}
        if self.certificate_pem:
            credential["public_certificate"] = self.certificate_pem
        else:
            credential["thumbprint"] = self.thumbprint
        if self.passphrase:
            credential["passphrase"] = self.passphrase
        return credential


@dataclass(frozen=True)
class DelegatedSignIn:
    """A service account's sign-in, kept in MSAL's token cache at ``cache_path``; ``login_command``
    is what an operator runs to sign in (again)."""

    cache_path: Path
    login_command: str


Credential = Union[ClientSecret, Certificate, DelegatedSignIn]


def graph_scopes(graph_url: str) -> list[str]:
    """Delegated scopes; MSAL adds openid, profile and offline_access (the refresh token) itself."""
    return [f"{graph_url.rstrip('/')}/Directory.Read.All"]


class TokenCacheFile:
    """MSAL's token cache in a file only its owner can read and write (mode 0600).

    It holds a refresh token: a long-lived credential for the whole directory. It is written
    whole to a new file created 0600 and renamed over the old one, so a reader never sees half a
    cache and the mode never depends on the umask. A cache others can read is refused, as ssh
    refuses a private key others can read."""

    def __init__(self, path: Path, login_command: str) -> None:
        self.path = Path(path)
        self.login_command = login_command

    def load(self) -> msal.SerializableTokenCache:
        cache = msal.SerializableTokenCache()
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return cache
        if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuthError(
                f"token cache {self.path} can be read or changed by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {self.path}', or delete it and sign "
                f"in again with {self.login_command}"
            )
        try:
            cache.deserialize(self.path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"token cache {self.path} is not an MSAL token cache; sign in again with "
                            f"{self.login_command}") from None
        return cache

    def save(self, cache: msal.SerializableTokenCache) -> None:
        if not cache.has_state_changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # O_CREAT's mode is masked by the umask only towards fewer bits; fchmod also covers
            # a leftover temporary file from a killed run.
            if os.name == "posix":
                os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                out.write(cache.serialize())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        cache.has_state_changed = False


class _Tokens:
    """What the three kinds share: the authority, a lock, and MSAL's errors turned into AuthError."""

    def __init__(self, *, authority_host: str, tenant_id: str, graph_url: str) -> None:
        self.authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self.graph_url = graph_url.rstrip("/")
        self._lock = threading.Lock()
        #: Token requests sent to the identity platform (cache hits not counted).
        self.requests = 0

    def _build(self, factory: Callable[[], msal.ClientApplication]) -> msal.ClientApplication:
        try:
            return factory()
        except ValueError as exc:
            # MSAL validates the authority's openid-configuration and the credential while it is built.
            raise AuthError(f"authority {self.authority}: {_first_line(str(exc))}") from None
        except requests.RequestException as exc:
            raise AuthError(f"authority {self.authority} unreachable: {type(exc).__name__}: "
                            f"{_first_line(str(exc))}") from None

    def _unreachable(self, exc: requests.RequestException) -> AuthError:
        return AuthError(f"token endpoint of {self.authority} unreachable: {type(exc).__name__}: "
                         f"{_first_line(str(exc))}")

    def _count(self, result: dict | None) -> None:
        if result and result.get("token_source") != "cache":
            self.requests += 1


class AppTokens(_Tokens):
    """App-only tokens with a client secret or a certificate (client credentials)."""

    def __init__(self, credential: ClientSecret | Certificate, *, authority_host: str, tenant_id: str,
                 client_id: str, graph_url: str, session: requests.Session) -> None:
        super().__init__(authority_host=authority_host, tenant_id=tenant_id, graph_url=graph_url)
        self._scopes = [f"{self.graph_url}/.default"]
        client_credential = (credential.secret if isinstance(credential, ClientSecret)
                             else credential.msal_credential())
        self._app = self._build(lambda: msal.ConfidentialClientApplication(
            client_id, client_credential=client_credential, authority=self.authority,
            # Without this MSAL asks login.microsoftonline.com about any non-Microsoft host.
            instance_discovery=False, http_client=session,
        ))

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            if force_refresh:
                self._app.remove_tokens_for_client()
            try:
                result = self._app.acquire_token_for_client(scopes=self._scopes)
            except requests.RequestException as exc:
                raise self._unreachable(exc) from None
            except ValueError as exc:
                # MSAL reads the private key (and its passphrase) only when it signs an assertion.
                raise AuthError(f"certificate credential for {self.authority} unusable: "
                                f"{type(exc).__name__}: {_first_line(str(exc))}") from None
            self._count(result)
            if "access_token" not in result:
                raise AuthError(f"token request to {self.authority} refused: "
                                f"{result.get('error', 'unknown_error')}: {_first_line(result.get('error_description') or '')}")
            return result["access_token"]


class DelegatedTokens(_Tokens):
    """Tokens for a signed-in service account, renewed silently with the refresh token in the
    token cache file; the file is rewritten whenever MSAL changed the cache (a new refresh token)."""

    def __init__(self, credential: DelegatedSignIn, *, authority_host: str, tenant_id: str, client_id: str,
                 graph_url: str, session: requests.Session) -> None:
        super().__init__(authority_host=authority_host, tenant_id=tenant_id, graph_url=graph_url)
        self._file = TokenCacheFile(credential.cache_path, credential.login_command)
        self._login = credential.login_command
        self._cache = self._file.load()
        self._app = self._build(lambda: msal.PublicClientApplication(
            client_id, authority=self.authority, token_cache=self._cache,
            instance_discovery=False, http_client=session,
        ))

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            accounts = self._app.get_accounts()
            if not accounts:
                raise AuthError(f"no signed-in account in token cache {self._file.path}; sign in with {self._login}")
            account = accounts[0]
            try:
                result = self._app.acquire_token_silent_with_error(
                    graph_scopes(self.graph_url), account=account, force_refresh=force_refresh)
            except requests.RequestException as exc:
                raise self._unreachable(exc) from None
            self._file.save(self._cache)
            if result is None:
                # MSAL found neither a valid access token nor a refresh token for the account.
                raise AuthError(f"the sign-in of {account.get('username')} has no refresh token left in "
                                f"{self._file.path}; sign in again with {self._login}")
            self._count(result)
            if "access_token" not in result:
                error = result.get("error", "unknown_error")
                description = _first_line(result.get("error_description") or "")
                if error in ("invalid_grant", "interaction_required"):
                    raise AuthError(f"the sign-in of {account.get('username')} is no longer valid ({error}: "
                                    f"{description}); sign in again with {self._login}")
                raise AuthError(f"token request to {self.authority} refused: {error}: {description}")
            return result["access_token"]


def token_source(credential: Credential, *, authority_host: str, tenant_id: str, client_id: str,
                 graph_url: str, session: requests.Session) -> AppTokens | DelegatedTokens:
    kind = DelegatedTokens if isinstance(credential, DelegatedSignIn) else AppTokens
    return kind(credential, authority_host=authority_host, tenant_id=tenant_id, client_id=client_id,
                graph_url=graph_url, session=session)


def sign_in_with_device_code(credential: DelegatedSignIn, *, authority_host: str, tenant_id: str, client_id: str,
                             graph_url: str, session: requests.Session, show: Callable[[str], None]) -> str:
    """The one-time sign-in of the service account: ``show`` gets the instruction (URL and user
    code) for a person to complete in any browser; blocks until they do or the code expires. A
    new token cache replaces the old one, 0600. Returns the signed-in username."""
    tokens = _Tokens(authority_host=authority_host, tenant_id=tenant_id, graph_url=graph_url)
    cache = msal.SerializableTokenCache()
    app = tokens._build(lambda: msal.PublicClientApplication(
        client_id, authority=tokens.authority, token_cache=cache, instance_discovery=False, http_client=session,
    ))
    try:
        flow = app.initiate_device_flow(scopes=graph_scopes(graph_url))
        if "user_code" not in flow:
            raise AuthError(f"device code request to {tokens.authority} refused: {flow.get('error', 'unknown_error')}: "
                            f"{_first_line(flow.get('error_description') or '')}")
        show(flow["message"])
        result = app.acquire_token_by_device_flow(flow)
    except requests.RequestException as exc:
        raise tokens._unreachable(exc) from None
    if "access_token" not in result:
        raise AuthError(f"sign-in not completed: {result.get('error', 'unknown_error')}: "
                        f"{_first_line(result.get('error_description') or '')}")
    TokenCacheFile(credential.cache_path, credential.login_command).save(cache)
    accounts = app.get_accounts()
    return accounts[0].get("username", "") if accounts else ""


def _first_line(text: str) -> str:
    # AADSTS descriptions carry trace and correlation ids on later lines.
    return text.strip().splitlines()[0] if text.strip() else ""
