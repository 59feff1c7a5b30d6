"""HTTP sessions that keep credentials and data on their configured origin.

Every session the clients create (Graph's, the one MSAL posts token requests through, Workday's)
is an :class:`OriginSession`:

- it sends only to one origin (scheme, host, port), https only, and refuses any other URL before
  a byte is sent: a discovery document, a nextLink or a stored URL cannot send a client secret,
  a token or a request body elsewhere;
- it never follows a redirect: a 3xx answer is one error naming the request and the refused
  target (requests would otherwise re-post a token request's form, client_secret included, to
  whatever ``Location`` says, plain http too);
- TLS is always verified, against certifi's roots plus the configured CA bundle
  (:func:`trust_context`): an enterprise behind TLS inspection adds its CA, it does not lose the
  public ones; REQUESTS_CA_BUNDLE and proxies from the environment are ignored.

:class:`SaneRetry` is urllib3's Retry with an unusable ``Retry-After`` (negative, not a number or
date) treated as absent: the exponential backoff applies instead of giving up on the request.
"""

from __future__ import annotations

import re
import ssl
from typing import Callable
from urllib.parse import urljoin, urlsplit

import certifi
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

_DEFAULT_PORTS = {"https": 443, "http": 80}
#: How much of a hostile Location or host is quoted in an error line.
_SHOWN = 120


#: Control characters that are not whitespace (ESC, DEL, C1) and bidirectional overrides: a remote
#: answer could use them to rewrite what a terminal shows; lone surrogates cannot even be printed.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def one_line(text: object, limit: int = 200) -> str:
    """Text from a remote answer as an error line may quote it: every run of whitespace (newlines
    included) one space, other control characters shown as U+FFFD, cut to ``limit`` characters
    with an ellipsis."""
    line = _CONTROL.sub("\ufffd", " ".join(str(text).split()))
    return line if len(line) <= limit else line[:limit - 1] + "…"


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute URL, default port filled in; None when it has none."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number, a broken IPv6 literal
        return None
    if not scheme or not host or port is None:
        return None
    return scheme, host, port


def show_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL for an error line (no path, query or user info: a
    Location may carry tokens), or the start of the text when it is no URL."""
    origin = origin_of(url)
    if origin is None:
        return repr(url[:_SHOWN])
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    shown = f"{scheme}://{host}" + ("" if _DEFAULT_PORTS.get(scheme) == port else f":{port}")
    return shown if len(shown) <= _SHOWN else shown[:_SHOWN] + "…"


def show_url(url: str) -> str:
    """Origin and path of a URL, without its query (skip tokens, deltatokens, prompts)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    return show_origin(url) + (path if len(path) <= _SHOWN else path[:_SHOWN] + "…")


def trust_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A TLS client context that verifies certificates and host names against certifi's roots
    plus, when given, the CAs in ``ca_bundle`` (PEM). ValueError names the bundle when it holds
    no usable certificate."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
            raise ValueError(f"ca_bundle {ca_bundle}: not a readable PEM certificate bundle ({reason})") from None
    return context


class TrustAdapter(HTTPAdapter):
    """An adapter whose every connection (direct or through a proxy) uses ``ssl_context`` and
    verifies: a ``verify`` argument can neither switch verification off nor replace the trust."""

    def __init__(self, ssl_context: ssl.SSLContext, **kwargs) -> None:
        self.ssl_context = ssl_context  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):  # type: ignore[override]
        pool_kwargs["ssl_context"] = self.ssl_context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # type: ignore[override]
        proxy_kwargs["ssl_context"] = self.ssl_context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[override]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
        pool_kwargs.pop("ca_certs", None)
        pool_kwargs.pop("ca_cert_dir", None)
        pool_kwargs.update(ssl_context=self.ssl_context, cert_reqs="CERT_REQUIRED")
        return host_params, pool_kwargs

    def cert_verify(self, conn, url, verify, cert) -> None:  # type: ignore[override]
        super().cert_verify(conn, url, True, cert)
        # requests would load certifi into the shared context on every connection; it is there.
        conn.ca_certs = conn.ca_cert_dir = None


class SaneRetry(Retry):
    """urllib3's Retry, but a ``Retry-After`` that is negative or neither seconds nor an HTTP
    date means "no advice": urllib3 would raise InvalidHeader and the request would fail
    without its retries. One too large is capped by ``retry_after_max`` as before."""

    def get_retry_after(self, response) -> float | None:  # type: ignore[override]
        try:
            return super().get_retry_after(response)
        except (InvalidHeader, ValueError, OverflowError):
            return None


class OriginSession(requests.Session):
    """A session bound to the origin of ``origin_url``; see the module docstring.

    ``refuse(message)`` makes the exception raised for a request to another origin or a
    redirect (GraphError, AuthError, WorkdayError); ``name`` says whose origin it is in that
    message ("the identity platform (authority_host)"); ``describe(url)`` how the request is
    named (default: origin and path)."""

    def __init__(self, origin_url: str, *, name: str, refuse: Callable[[str], Exception],
                 ssl_context: ssl.SSLContext, timeout: float, retry: Retry | int = 0,
                 pool_maxsize: int = 10, user_agent: str | None = None,
                 describe: Callable[[str], str] = show_url) -> None:
        super().__init__()
        self.origin = origin_of(origin_url)
        self.origin_text = show_origin(origin_url)
        self.name = name
        self._refuse = refuse
        self._describe = describe
        self.default_timeout = timeout
        if self.origin is None or self.origin[0] != "https":
            raise refuse(f"{name} must be an https URL, got {self.origin_text}")
        self.trust_env = False  # neither REQUESTS_CA_BUNDLE nor proxy variables from the environment
        self.verify = True
        if user_agent:
            self.headers["User-Agent"] = user_agent
        self.adapters.clear()  # no plain-http adapter at all
        self.mount("https://", TrustAdapter(ssl_context, max_retries=retry, pool_connections=2,
                                            pool_maxsize=pool_maxsize))

    def request(self, method, url, **kwargs):  # type: ignore[override]
        # MSAL takes no timeout of its own when it is handed an http_client.
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, **kwargs)

    def send(self, request, **kwargs):  # type: ignore[override]
        what = f"{request.method} {self._describe(request.url)}"
        if origin_of(request.url) != self.origin:
            raise self._refuse(f"{what}: refused, not sent: {show_origin(request.url)} is not {self.name} at "
                               f"{self.origin_text}")
        kwargs["allow_redirects"] = False
        kwargs["verify"] = True
        response = super().send(request, **kwargs)
        if 300 <= response.status_code < 400:
            location = response.headers.get("Location")
            response.close()
            if location is None:
                target = "nowhere (no Location header)"
            else:
                try:
                    target = show_origin(urljoin(request.url, location))
                except ValueError:
                    target = repr(location[:_SHOWN])
            raise self._refuse(f"{what} redirected to {target}: refused (HTTP {response.status_code}; requests to "
                               f"{self.name} never follow redirects)")
        return response

    def resolve_redirects(self, *args, **kwargs):  # type: ignore[override]
        # Never a next request: requests asks this even with allow_redirects=False (Response.next).
        return iter(())


__all__ = ["OriginSession", "SaneRetry", "TrustAdapter", "one_line", "origin_of", "show_origin", "show_url",
           "trust_context"]
