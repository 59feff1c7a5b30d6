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

MSAL is handed a session bound to the authority's origin (:class:`entra_pipeline.net.OriginSession`):
no token request follows a redirect or goes to another host, and the token and device-code
endpoints the openid-configuration names must sit on that origin, or the sign-in is refused
before anything is sent.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import stat
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Union

import msal
import requests

from entra_pipeline.errors import PipelineError
from entra_pipeline.net import one_line, origin_of, show_origin


class _MaskGrantCodes(logging.Filter):
    """MSAL's token cache logs each token request at DEBUG with secrets masked, but not the
    device code, which anyone could redeem for the tokens while the sign-in is pending."""

    _CODES = re.compile(r'("(?:device_code|code)":\s*)"[^"]*"')

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._CODES.sub(r'\1"********"', a) if isinstance(a, str) else a for a in record.args)
        return True


class _HideTokenResponseBody(logging.Filter):
    """MSAL logs a token response that is not JSON in full at ERROR level; a proxy page or an
    answer cut short may carry an access token. Its length is enough to diagnose."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Token response is not in json format") and isinstance(record.args, tuple):
            record.args = tuple(f"<{len(a)} characters not shown>" if isinstance(a, str) else a for a in record.args)
            record.exc_info, record.exc_text = None, None
        return True


# Filters on the loggers that create the records, so they run before any handler sees them.
logging.getLogger("msal.token_cache").addFilter(_MaskGrantCodes())
logging.getLogger("msal.oauth2cli.oauth2").addFilter(_HideTokenResponseBody())


#: Given to every MSAL application: with azure_region unset MSAL reads MSAL_FORCE_REGION from the
#: environment and sends token requests to "{region}.{authority host}" (westus.login.example),
#: a host nobody configured. Tokens come from authority_host only.
_NO_REGION = {"azure_region": msal.ClientApplication.DISABLE_MSAL_FORCE_REGION}


class AuthError(PipelineError):
    """The identity platform refused to issue a token, or the sign-in cannot be used.
    ``transient``: it could not be reached, so a later attempt may succeed."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message, transient=transient)


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

    It holds a refresh token: a long-lived credential for the whole directory. Every use happens
    under an exclusive lock on ``<file>.lock`` (the steps of a run, concurrent runs and ``login``
    take turns), the file is re-read when another process changed it, and it is written whole to a
    new 0600 file renamed over the old one, so nobody sees half a cache and a new sign-in is never
    overwritten by an older copy. A cache other users could read or that is a symbolic link is
    refused, as ssh refuses such a private key."""

    def __init__(self, path: Path, login_command: str) -> None:
        self.path = Path(path)
        self.login_command = login_command
        self._seen: tuple | None = None  # (inode, mtime, size) of the file last read or written

    @contextmanager
    def locked(self) -> Iterator[None]:
        self._make_parent()
        try:
            descriptor = os.open(self.path.with_name(self.path.name + ".lock"),
                                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._os_error(exc) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def load(self) -> msal.SerializableTokenCache:
        cache = msal.SerializableTokenCache()
        self.refresh(cache)
        return cache

    def refresh(self, cache: msal.SerializableTokenCache) -> None:
        """Re-read the file into ``cache`` if it changed since this object last read or wrote it."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._os_error(exc) from None
        with os.fdopen(descriptor, "rb") as file:
            info = os.fstat(file.fileno())
            if info.st_uid != os.getuid():
                raise AuthError(f"token cache {self.path} belongs to another user (uid {info.st_uid}); run "
                                f"{self.login_command} as the user that runs the syncs")
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise AuthError(
                    f"token cache {self.path} can be read or changed by other users "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {self.path}', or delete it and sign "
                    f"in again with {self.login_command}"
                )
            seen = (info.st_ino, info.st_mtime_ns, info.st_size)
            if seen == self._seen:
                return
            try:
                cache.deserialize(file.read().decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"token cache {self.path} is not an MSAL token cache; sign in again with "
                                f"{self.login_command}") from None
            cache.has_state_changed = False
            self._seen = seen

    def save(self, cache: msal.SerializableTokenCache) -> None:
        """Write the cache if MSAL changed it; call while holding :meth:`locked`."""
        if not cache.has_state_changed:
            return
        self._make_parent()
        # mkstemp: a new file with a random name, O_EXCL and 0600, so nothing planted can be followed.
        descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                out.write(cache.serialize())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        info = self.path.stat()
        self._seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        cache.has_state_changed = False

    def _make_parent(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = parent.stat()
        except OSError as exc:
            raise self._os_error(exc) from None
        # Whoever may write the directory may swap the cache or its lock for their own.
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise AuthError(f"the token cache's directory {parent} is writable by other users or belongs to "
                            f"another user; keep token caches in a directory only you can write (mode 0700)")

    def _os_error(self, exc: OSError) -> AuthError:
        if exc.errno == errno.ELOOP:
            return AuthError(f"token cache {self.path} is a symbolic link; keep the cache in a real file")
        return AuthError(f"token cache {self.path}: {exc.strerror}; run {self.login_command} as the user that "
                         "runs the syncs")


class _Tokens:
    """What the three kinds share: the authority, a lock, and MSAL's errors turned into AuthError."""

    def __init__(self, *, authority_host: str, tenant_id: str, graph_url: str) -> None:
        self.authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self.tenant_id = tenant_id.lower()
        self.graph_url = graph_url.rstrip("/")
        self._lock = threading.Lock()
        #: Token requests sent to the identity platform (cache hits not counted).
        self.requests = 0

    def _build(self, factory: Callable[[], msal.ClientApplication],
               session: requests.Session) -> msal.ClientApplication:
        """The MSAL application ``factory`` makes; MSAL reads the openid-configuration through
        ``session`` while it is built, and that document is checked before MSAL sees it."""
        hook = self._check_discovery
        session.hooks["response"].append(hook)
        try:
            app = factory()
        except ValueError as exc:
            # MSAL validates the authority's openid-configuration and the credential while it is built.
            raise AuthError(f"authority {self.authority}: {_first_line(str(exc))}") from None
        except RecursionError:
            raise AuthError(f"authority {self.authority}: its openid-configuration is not JSON (nested too "
                            "deep)") from None
        except requests.RequestException as exc:
            raise AuthError(f"authority {self.authority} unreachable: {type(exc).__name__}: "
                            f"{_first_line(str(exc))}") from None
        finally:
            session.hooks["response"].remove(hook)
        # What MSAL kept, checked again: it must never differ from the document checked.
        self._check_endpoints({name: getattr(app.authority, name, None) for name in _DISCOVERED_ENDPOINTS})
        return app

    def _check_discovery(self, response: requests.Response, **_: object) -> requests.Response:
        """A response hook: an openid-configuration naming endpoints off the authority's origin is
        refused before MSAL uses it (MSAL would post the credential there, or fail on an http one
        with a message of its own)."""
        if (response.status_code == 200 and response.request.method == "GET"
                and response.url.split("?")[0].endswith("/.well-known/openid-configuration")):
            try:
                document = response.json()
            except (ValueError, RecursionError):
                return response  # MSAL reports a document that is not JSON
            if isinstance(document, dict):
                self._check_endpoints({name: document.get(name) for name in _DISCOVERED_ENDPOINTS})
        return response

    def _check_endpoints(self, endpoints: dict[str, object]) -> None:
        """The openid-configuration decides where MSAL posts the client secret, the assertion or the
        refresh token: those endpoints must sit on the configured authority's origin."""
        ours = origin_of(self.authority)
        for name, url in endpoints.items():
            if url is not None and (not isinstance(url, str) or origin_of(url) != ours):
                where = show_origin(url) if isinstance(url, str) else repr(url)[:120]
                raise AuthError(f"authority {self.authority}: its openid-configuration names {name} on {where}, "
                                f"not on {show_origin(self.authority)}: refused (credentials are sent only to the "
                                "configured authority_host)")

    def _unreachable(self, exc: requests.RequestException) -> AuthError:
        return AuthError(f"token endpoint of {self.authority} unreachable: {type(exc).__name__}: "
                         f"{_first_line(str(exc))}", transient=True)

    def _not_json(self) -> AuthError:
        return AuthError(f"token endpoint of {self.authority} answered with something that is not JSON "
                         "(a proxy's page, or an answer cut short)", transient=True)

    def _of_tenant(self, tenant: str | None) -> bool:
        # A configured tenant GUID must match the sign-in's; a domain name cannot be compared.
        return not _GUID.fullmatch(self.tenant_id) or (tenant or "").lower() == self.tenant_id

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
            instance_discovery=False, http_client=session, **_NO_REGION,
        ), session)

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            if force_refresh:
                self._app.remove_tokens_for_client()
            try:
                result = self._app.acquire_token_for_client(scopes=self._scopes)
            except requests.RequestException as exc:
                raise self._unreachable(exc) from None
            except (json.JSONDecodeError, RecursionError):
                raise self._not_json() from None
            except ValueError as exc:
                # MSAL reads the private key only when it signs an assertion.
                raise AuthError(f"certificate credential for {self.authority} unusable: "
                                f"{type(exc).__name__}: {_first_line(str(exc))}") from None
            self._count(result)
            if "access_token" not in result:
                raise AuthError(f"token request to {self.authority} refused: {_error_code(result)}: "
                                f"{_first_line(result.get('error_description') or '')}")
            return result["access_token"]


class DelegatedTokens(_Tokens):
    """Tokens for a signed-in service account, renewed silently with the refresh token in the
    token cache file, under the file's lock: re-read first if another process changed it, and
    rewritten when MSAL changed it (a new refresh token)."""

    def __init__(self, credential: DelegatedSignIn, *, authority_host: str, tenant_id: str, client_id: str,
                 graph_url: str, session: requests.Session) -> None:
        super().__init__(authority_host=authority_host, tenant_id=tenant_id, graph_url=graph_url)
        self._file = TokenCacheFile(credential.cache_path, credential.login_command)
        self._login = credential.login_command
        self._cache = msal.SerializableTokenCache()
        self._app = self._build(lambda: msal.PublicClientApplication(
            client_id, authority=self.authority, token_cache=self._cache,
            instance_discovery=False, http_client=session, **_NO_REGION,
        ), session)

    def token(self, force_refresh: bool = False) -> str:
        with self._lock, self._file.locked():
            self._file.refresh(self._cache)
            accounts = self._app.get_accounts()
            if not accounts:
                raise AuthError(f"no signed-in account in token cache {self._file.path}; sign in with {self._login}")
            ours = [a for a in accounts if self._of_tenant(a.get("realm"))]
            if not ours:
                raise AuthError(f"the token cache {self._file.path} holds a sign-in for another tenant than "
                                f"{self.tenant_id}; sign in again with {self._login}")
            account = ours[0]
            try:
                result = self._app.acquire_token_silent_with_error(
                    graph_scopes(self.graph_url), account=account, force_refresh=force_refresh)
            except requests.RequestException as exc:
                raise self._unreachable(exc) from None
            except (json.JSONDecodeError, RecursionError):
                raise self._not_json() from None
            self._file.save(self._cache)
        if result is None:
            # MSAL found neither a valid access token nor a refresh token for the account.
            raise AuthError(f"the sign-in of {account.get('username')} has no refresh token left in "
                            f"{self._file.path}; sign in again with {self._login}")
        self._count(result)
        if "access_token" not in result:
            error = _error_code(result)
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
        **_NO_REGION,
    ), session)
    try:
        flow = app.initiate_device_flow(scopes=graph_scopes(graph_url))
        if "user_code" not in flow:
            raise AuthError(f"device code request to {tokens.authority} refused: {_error_code(flow)}: "
                            f"{_first_line(flow.get('error_description') or '')}")
        show(flow["message"])
        result = app.acquire_token_by_device_flow(flow)
    except requests.RequestException as exc:
        raise tokens._unreachable(exc) from None
    except (json.JSONDecodeError, RecursionError):
        raise tokens._not_json() from None
    if "access_token" not in result:
        raise AuthError(f"sign-in not completed: {_error_code(result)}: "
                        f"{_first_line(result.get('error_description') or '')}")
    claims = result.get("id_token_claims") or {}
    username = one_line(claims.get("preferred_username", ""), 120)
    # What scheduled runs depend on, checked now rather than at 6 a.m. tomorrow.
    if not tokens._of_tenant(claims.get("tid")):
        raise AuthError(f"{username} signed in to tenant {one_line(claims.get('tid'), 100)}, not {tokens.tenant_id}; "
                        "sign in with an account of the configured tenant")
    if not result.get("refresh_token"):
        raise AuthError("the sign-in gave no refresh token (offline_access not granted); scheduled syncs could not "
                        "renew it")
    granted = {scope.lower() for scope in (result.get("scope") or "").split()}
    if not {"directory.read.all", graph_scopes(graph_url)[0].lower()} & granted:
        raise AuthError(f"{username} signed in, but Directory.Read.All was not granted (granted: "
                        f"{one_line(result.get('scope') or 'nothing')}); an administrator must consent to it")
    file = TokenCacheFile(credential.cache_path, credential.login_command)
    with file.locked():
        file.save(cache)
    return username


#: The endpoints of the openid-configuration MSAL sends credentials to.
_DISCOVERED_ENDPOINTS = ("token_endpoint", "device_authorization_endpoint")

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _first_line(text: object) -> str:
    # AADSTS descriptions carry trace and correlation ids on later lines. 400: a whole AADSTS
    # sentence, or a connection error down to its TLS reason.
    text = str(text).strip()
    return one_line(text.splitlines()[0], 400) if text else ""


def _error_code(answer: dict) -> str:
    """The ``error`` of a token or device-code answer as an error line quotes it: the server
    chose it, so it may span lines or run to any length."""
    return one_line(answer.get("error") or "unknown_error", 100)
