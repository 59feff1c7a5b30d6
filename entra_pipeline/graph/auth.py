"""Access tokens for Microsoft Graph from the identity platform, through MSAL.

App-only access (client credentials): MSAL caches the token and renews it when it has under five
minutes left; ``token(force_refresh=True)`` drops the cache after Graph rejected a token.
"""

from __future__ import annotations

import threading

import msal
import requests


class AuthError(RuntimeError):
    """The identity platform refused to issue a token. The message never contains the secret."""


class ClientSecretTokens:
    """Tokens for one app registration in one tenant, scope ``{graph}/.default``."""

    def __init__(
        self,
        *,
        authority_host: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        graph_url: str,
        session: requests.Session,
    ) -> None:
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._scopes = [f"{graph_url.rstrip('/')}/.default"]
        self._lock = threading.Lock()
        self.requests = 0
        try:
            self._app = msal.ConfidentialClientApplication(
                client_id,
                client_credential=client_secret,
                authority=self._authority,
                # Without this MSAL asks login.microsoftonline.com about any non-Microsoft host.
                instance_discovery=False,
                http_client=session,
            )
        except ValueError as exc:
            # MSAL validates the authority's openid-configuration while it is built.
            raise AuthError(f"authority {self._authority}: {_first_line(str(exc))}") from None
        except requests.RequestException as exc:
            raise AuthError(f"authority {self._authority} unreachable: {type(exc).__name__}: {_first_line(str(exc))}") from None

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            if force_refresh:
                self._app.remove_tokens_for_client()
            try:
                result = self._app.acquire_token_for_client(scopes=self._scopes)
            except requests.RequestException as exc:
                raise AuthError(
                    f"token endpoint of {self._authority} unreachable: {type(exc).__name__}: {_first_line(str(exc))}"
                ) from None
            if result.get("token_source") != "cache":
                self.requests += 1
            if "access_token" not in result:
                description = _first_line(result.get("error_description") or "")
                raise AuthError(
                    f"token request to {self._authority} refused: {result.get('error', 'unknown_error')}: {description}"
                )
            return result["access_token"]


def _first_line(text: str) -> str:
    # AADSTS descriptions carry trace and correlation ids on later lines.
    return text.strip().splitlines()[0] if text.strip() else ""
