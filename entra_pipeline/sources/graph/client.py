"""A small Microsoft Graph v1.0 client for reading users, groups and group members.

- Paging follows ``@odata.nextLink`` until it is absent and never computes skip tokens.
- Transient answers (429, 500, 502, 503, 504, connection errors) are retried by urllib3's
  ``Retry``: ``Retry-After`` is honoured when Graph sends it (429, 503 and 504), otherwise capped
  exponential backoff with jitter. A connection dropped in the middle of a body, and a success
  whose JSON is cut short, are retried here the same number of times.
- A rejected access token (401) is renewed and the request repeated; a token rejected right
  after it was renewed is not renewed again (a sign-in problem, reported), one that expired
  during a long run of retries is.
- Every failure is one ``GraphError`` naming the request (method, path) and Graph's request-id.
- ``batch_get`` sends GETs through JSON batching (``POST /v1.0/$batch``, at most 20 a request);
  sub-requests answered 429/500/502/503/504 are re-batched and retried, waiting for the largest
  ``Retry-After``. ``group_members`` reads every group's member pages that way.
- Requests go only to graph_url's origin, token requests (MSAL's own session) only to
  authority_host's, https only, and none follows a redirect (:mod:`entra_pipeline.net`): a 3xx
  answer is one GraphError (AuthError for the identity platform) naming the refused host.
- TLS trust is certifi's roots plus the configured CA bundle, never REQUESTS_CA_BUNDLE or
  CURL_CA_BUNDLE from the environment.
- A paged read ends with one GraphError when a nextLink repeats one of the same read, when it
  runs far beyond the first page's ``@odata.count``, or after :data:`MAX_PAGES_PER_READ` pages.
- An answer that is not JSON, nested too deep included, is "response is not JSON" naming the
  request; a ``Retry-After`` that is negative or no number means the exponential backoff.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

import orjson
import requests

from entra_pipeline.net import OriginSession, SaneRetry, origin_of, show_origin, trust_context
from entra_pipeline.sources.graph.auth import AppTokens, AuthError, Credential, DelegatedSignIn, DelegatedTokens, \
    sign_in_with_device_code, token_source
from entra_pipeline.sources.graph.batch import BATCH_LIMIT, BatchReads
from entra_pipeline.sources.graph.errors import DELTA_RESYNC_CODES, DeltaExpired, GraphError, describe, error_code, \
    error_from, short
from entra_pipeline.sources.graph.pages import Collection, DeltaRound, PageGuard, check_delta_item, member_type

API_VERSION = "v1.0"
# The user agent names the tool so tenant admins can recognise it in sign-in and audit logs.
USER_AGENT = "entra-pipeline/0.1"

Progress = Callable[[str, int, int | None], None]

#: A token rejected within this many seconds of being renewed is not renewed again.
FRESH_TOKEN_SECONDS = 5.0

# A body cut short after the headers arrived (a connection dropped mid-answer).
_BODY_ERRORS = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)

# 19 digits in a row may be an integer beyond 64 bits, which orjson would turn into a float.
# Found by mapping every digit to "0" and searching for the run: a regex takes longer than the parse.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_LONG_RUN = b"0" * 19


def _parse(response: requests.Response) -> object:
    """The answer's JSON: orjson for a UTF-8 body it reads exactly, else what requests makes of it
    (long integers, NaN, lone surrogates, deep nesting, other charsets)."""
    content = response.content
    if (response.encoding or "utf-8").lower() in ("utf-8", "utf8") and _LONG_RUN not in content.translate(_DIGITS):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    return response.json()


class _GraphRetry(SaneRetry):
    # Graph may send Retry-After on 503 and 504 as well as on 429.
    RETRY_AFTER_STATUS_CODES = frozenset([429, 503, 504])


@dataclass(frozen=True)
class GraphSettings:
    graph_url: str
    authority_host: str
    tenant_id: str
    client_id: str
    credential: Credential = field(repr=False)
    ca_bundle: str | None = None
    page_size: int = 999
    timeout_seconds: float = 60.0
    max_retries: int = 6
    max_retry_after_seconds: float = 120.0
    parallel_requests: int = 4
    backoff_factor: float = 0.5


@dataclass
class GraphStats:
    """What one sync cost: for run metadata and the benchmark.

    ``requests`` counts HTTP requests (a ``$batch`` is one, urllib3's retries included);
    ``batched_requests`` the sub-requests sent inside batches (re-sent ones included); ``pages``
    the collection pages read, directly or as sub-responses; ``retries`` and ``throttled`` count
    HTTP retries and sub-request retries alike."""

    requests: int = 0
    batched_requests: int = 0
    pages: int = 0
    retries: int = 0
    throttled: int = 0
    bytes: int = 0
    token_requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class GraphClient(BatchReads):
    """Reads one tenant. Thread-safe for the parallel member reads it does itself."""

    def __init__(self, settings: GraphSettings) -> None:
        self.settings = settings
        self.base = f"{settings.graph_url.rstrip('/')}/{API_VERSION}"
        self._origin = origin_of(self.base)
        self.stats = GraphStats()
        self._stats_lock = threading.Lock()
        retry = _GraphRetry(
            total=settings.max_retries,
            connect=settings.max_retries,
            read=settings.max_retries,
            status=settings.max_retries,
            other=0,
            backoff_factor=settings.backoff_factor,
            backoff_max=30.0,
            backoff_jitter=settings.backoff_factor,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True,
            retry_after_max=settings.max_retry_after_seconds,
            # Return the last answer instead of raising, so its Graph error body can be reported.
            raise_on_status=False,
        )
        try:
            context = trust_context(settings.ca_bundle)
        except ValueError as exc:
            raise GraphError(str(exc), transient=False) from None
        # Graph API calls go to graph_url's origin only; token requests (MSAL's, through its own
        # session) to authority_host's only. Neither follows a redirect.
        self.session = OriginSession(
            self.base, name="Graph (graph_url)", refuse=lambda message: GraphError(message, transient=False),
            ssl_context=context, timeout=settings.timeout_seconds, retry=retry,
            pool_maxsize=max(settings.parallel_requests, 2), user_agent=USER_AGENT, describe=describe)
        self.identity_session = OriginSession(
            settings.authority_host, name="the identity platform (authority_host)", refuse=AuthError,
            ssl_context=context, timeout=settings.timeout_seconds, retry=retry, user_agent=USER_AGENT)
        self._tokens: AppTokens | DelegatedTokens | None = None
        self._token_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()
        self.identity_session.close()

    def sign_in(self, show) -> str:
        """The device-code sign-in of a delegated integration's service account, through this
        client's session (its CA bundle and retries); returns the signed-in username."""
        s = self.settings
        if not isinstance(s.credential, DelegatedSignIn):
            raise AuthError("only a delegated sign-in (source.auth: delegated) signs in interactively")
        return sign_in_with_device_code(s.credential, authority_host=s.authority_host, tenant_id=s.tenant_id,
                                        client_id=s.client_id, graph_url=s.graph_url,
                                        session=self.identity_session, show=show)

    # -- requests --------------------------------------------------------------------------
    def _token(self, rejected: str | None = None) -> str:
        """A valid access token; ``rejected`` is one Graph refused, renewed unless another thread
        already renewed it."""
        with self._token_lock:
            if self._tokens is None:
                s = self.settings
                self._tokens = token_source(
                    s.credential, authority_host=s.authority_host, tenant_id=s.tenant_id, client_id=s.client_id,
                    graph_url=s.graph_url, session=self.identity_session,
                )
            token = self._tokens.token()
            if rejected is not None and token == rejected:
                token = self._tokens.token(force_refresh=True)
            self.stats.token_requests = self._tokens.requests
            return token

    def _send(self, method: str, url: str, *, params: dict | None = None, headers: dict | None = None,
              json_body: dict | None = None) -> requests.Response:
        """One request with a valid token (renewed on a 401, see FRESH_TOKEN_SECONDS), retried by urllib3 until the
        headers arrive and here when the body is cut short; raises GraphError only when no whole
        answer came at all."""
        token = self._token()
        renewed_at: float | None = None
        renewals = cut_short = 0
        while True:
            request_headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()),
                **(headers or {}),
            }
            try:
                response = self.session.request(method, url, params=params, headers=request_headers,
                                                json=json_body)
            except _BODY_ERRORS as exc:
                # urllib3 retries only until the headers arrive; a connection dropped in the
                # middle of the body is retried here, as often as max_retries allows.
                cut_short += 1
                if cut_short > self.settings.max_retries:
                    raise GraphError(f"{method} {describe(url)}: the connection dropped in the middle of the "
                                     f"answer {cut_short} times: {type(exc).__name__}: {short(str(exc))}",
                                     transient=True) from None
                self._pause(cut_short)
                continue
            except requests.RequestException as exc:
                raise GraphError(f"{method} {describe(url)} failed after retries: {type(exc).__name__}: "
                                 f"{short(str(exc))}", transient=True) from None
            self._count(response)
            if response.status_code == 401 and error_code(response) == "InvalidAuthenticationToken":
                # The token expired or was revoked mid-run: renew it and ask again. A token Graph
                # rejects as soon as it was issued is not renewed again (a sign-in problem), but
                # one that expired during a long run of retries (Retry-After waits) is.
                fresh = renewed_at is not None and time.monotonic() - renewed_at < FRESH_TOKEN_SECONDS
                if not fresh and renewals <= self.settings.max_retries:
                    renewals += 1
                    renewed_at = time.monotonic()
                    token = self._token(rejected=token)
                    continue
            return response

    def _pause(self, attempt: int) -> None:
        """Count a retry and wait: capped exponential backoff with jitter."""
        with self._stats_lock:
            self.stats.retries += 1
        factor = self.settings.backoff_factor
        time.sleep(min(30.0, factor * 2 ** (attempt - 1)) + random.uniform(0, factor))

    def _request_json(self, method: str, url: str, *, params: dict | None = None, headers: dict | None = None,
                      json_body: dict | None = None) -> tuple[requests.Response, dict | None]:
        """``_send``, and the answer's JSON object when it succeeded (None for an error status).
        A success whose body is not whole JSON (cut by a proxy) is asked for again; after
        max_retries it is one GraphError naming the request."""
        what = f"{method} {describe(url)}"
        for attempt in range(1, self.settings.max_retries + 2):
            response = self._send(method, url, params=params, headers=headers, json_body=json_body)
            if response.status_code >= 400:
                return response, None
            try:
                return response, self._json_object(response, what)
            except GraphError:
                if attempt > self.settings.max_retries:
                    raise
                self._pause(attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _json_object(response: requests.Response, what: str) -> dict:
        try:
            body = _parse(response)
        except (ValueError, RecursionError):
            # RecursionError: arrays or objects nested deeper than the parser goes.
            raise GraphError(
                f"{what}: response is not JSON (HTTP {response.status_code}, "
                f"content-type {response.headers.get('content-type')!r}, request-id "
                f"{response.headers.get('request-id', 'none')})",
                status=response.status_code, request_id=response.headers.get("request-id"),
            ) from None
        if not isinstance(body, dict):
            raise GraphError(f"{what}: expected a JSON object, got {type(body).__name__} "
                             f"(request-id {response.headers.get('request-id', 'none')})")
        return body

    def get_json(self, url: str, params: dict | None = None, headers: dict | None = None) -> dict:
        """GET a Graph URL and return its JSON object, or raise GraphError."""
        response, body = self._request_json("GET", url, params=params, headers=headers)
        if body is None:
            raise error_from(response, describe(url))
        return body

    def _count(self, response: requests.Response) -> None:
        retries = getattr(response.raw, "retries", None)
        history = retries.history if retries is not None else ()
        with self._stats_lock:
            self.stats.requests += 1 + len(history)
            self.stats.retries += len(history)
            self.stats.throttled += sum(1 for h in history if h.status == 429)
            self.stats.bytes += len(response.content)

    # -- collections -----------------------------------------------------------------------
    def list_collection(self, path: str, params: dict[str, str], *, count: bool = False,
                        label: str | None = None, progress: Progress | None = None) -> Collection:
        """Every item of a collection, following nextLink; items must carry a string ``id``."""
        url = f"{self.base}/{path}"
        query: dict[str, str] | None = {"$top": str(self.settings.page_size), **params}
        headers = {}
        if count:
            query["$count"] = "true"
            # Graph does not carry ConsistencyLevel to later pages: send it on every request.
            headers["ConsistencyLevel"] = "eventual"
        items: list[dict] = []
        reported: int | None = None
        pages = 0
        guard = PageGuard(f"GET {describe(url)}", requests.Request("GET", url, params=query).prepare().url,
                           self.settings.page_size)
        while url:
            body = self.get_json(url, query, headers)
            pages += 1
            value = body.get("value")
            if not isinstance(value, list):
                raise GraphError(f"GET {describe(url)}: response has no 'value' list (page {pages})")
            if pages == 1 and isinstance(body.get("@odata.count"), int):
                reported = body["@odata.count"]
                guard.expect(reported)
            for item in value:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                    raise GraphError(f"GET {describe(url)}: page {pages} has an item without a string "
                                     f"'id': {short(json.dumps(item, default=str), 120)}")
            items.extend(value)
            if progress is not None:
                progress(label or path, len(items), reported)
            next_link = body.get("@odata.nextLink")
            if next_link is not None and (not isinstance(next_link, str) or origin_of(next_link) != self._origin):
                # The bearer token must never be sent to another host.
                raise GraphError(f"GET {describe(url)}: nextLink points outside {show_origin(self.base)}")
            if next_link is not None:
                guard.follow(next_link, pages + 1)
            url, query = next_link, None
        with self._stats_lock:
            self.stats.pages += pages
        return Collection(items, reported, pages)

    def list_users(self, select: Iterable[str], expand: str | None = None,
                   progress: Progress | None = None) -> Collection:
        params = {"$select": ",".join(select)}
        if not expand:
            return self.list_collection("users", params, count=True, label="users", progress=progress)
        # Graph does not combine $expand with advanced queries ($count): count first, separately.
        reported = self.count("users")
        params["$expand"] = expand
        users = self.list_collection("users", params, label="users",
                                     progress=(lambda label, done, _: progress(label, done, reported))
                                     if progress else None)
        return Collection(users.items, reported, users.pages)

    def count(self, path: str) -> int | None:
        """A collection's ``$count`` from a one-item page (advanced query mode)."""
        body = self.get_json(f"{self.base}/{path}", {"$select": "id", "$top": "1", "$count": "true"},
                             {"ConsistencyLevel": "eventual"})
        count = body.get("@odata.count")
        return count if isinstance(count, int) else None

    def list_groups(self, select: Iterable[str], progress: Progress | None = None) -> Collection:
        return self.list_collection("groups", {"$select": ",".join(select)}, count=True,
                                    label="groups", progress=progress)

    # -- delta queries ---------------------------------------------------------------------
    def serves(self, url: str) -> bool:
        """Whether ``url`` (a stored deltaLink) belongs to this client's Graph endpoint."""
        return origin_of(url) == self._origin and urlsplit(url).path.startswith(urlsplit(self.base).path + "/")

    def _relative(self, next_link: object, what: str) -> str:
        """An absolute nextLink as a URL relative to ``/v1.0``; never another origin."""
        base_path = urlsplit(self.base).path
        if isinstance(next_link, str) and origin_of(next_link) == self._origin:
            parts = urlsplit(next_link)
            if parts.path.startswith(base_path + "/"):
                return parts.path[len(base_path):] + (f"?{parts.query}" if parts.query else "")
        # The bearer token must never be sent to another host.
        raise GraphError(f"{what}: nextLink points outside {self.base}")

    def delta_round(self, resource: str, select: Iterable[str], delta_link: str | None = None,
                    progress: Progress | None = None,
                    on_page: Callable[[list[dict]], None] | None = None) -> DeltaRound:
        """Read one delta round of ``users`` or ``groups``: from scratch (``delta_link`` None: every
        object, Graph's full round) or the changes since ``delta_link``. Each page's items go to
        ``on_page`` as they arrive, if given (the round then keeps none: a full round of a large
        directory is not held in memory), else into the round's ``items``.

        ``$select`` is sent on the first request of a full round only: Graph carries it in the
        tokens. Raises DeltaExpired when Graph no longer accepts the token."""
        if delta_link is None:
            url, query = f"{self.base}/{resource}/delta", {"$select": ",".join(select)}
        else:
            self._relative(delta_link, f"{resource} delta")  # never send the token to another host
            url, query = delta_link, None
        label = f"{resource} ({'full round' if delta_link is None else 'changes'})"
        items: list[dict] = []
        count = objects = 0
        last_id = None  # a group split over pages comes again first on the next page
        pages = 0
        guard = PageGuard(f"GET {describe(url)}", requests.Request("GET", url, params=query).prepare().url,
                           self.settings.page_size)
        # Delta takes no $top; Graph caps its pages (about 200 users) whatever is asked, but a
        # smaller page_size is honoured.
        prefer = {"Prefer": f"odata.maxpagesize={self.settings.page_size}"}
        while True:
            try:
                body = self.get_json(url, query, prefer)
            except GraphError as exc:
                if exc.code in DELTA_RESYNC_CODES or exc.status == 410:
                    raise DeltaExpired(str(exc), status=exc.status, code=exc.code,
                                       request_id=exc.request_id) from None
                raise
            pages += 1
            what = f"GET {describe(url)}"
            value = body.get("value")
            if not isinstance(value, list):
                raise GraphError(f"{what}: response has no 'value' list (delta page {pages})")
            for item in value:
                check_delta_item(item, what, pages)
            if on_page is None:
                items.extend(value)
            else:
                on_page(value)
            count += len(value)
            if progress is not None and value:
                objects += len({item["id"] for item in value} - {last_id})
                last_id = value[-1]["id"]
                progress(label, objects, None)
            next_link, delta = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
            if next_link is not None:
                self._relative(next_link, what)
                guard.follow(next_link, pages + 1)
                url, query = next_link, None
                continue
            if delta is not None:
                self._relative(delta, what)
            with self._stats_lock:
                self.stats.pages += pages
            return DeltaRound(items, delta, pages, delta_link is None, delta is not None, count)


__all__ = ["AuthError", "BATCH_LIMIT", "Collection", "DeltaExpired", "DeltaRound", "GraphClient", "GraphError", "GraphSettings",
           "GraphStats", "member_type"]
