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

import hashlib
import json
import math
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit

import requests

from entra_pipeline.sources.graph.auth import AppTokens, AuthError, Credential, DelegatedSignIn, DelegatedTokens, \
    sign_in_with_device_code, token_source
from entra_pipeline.errors import PipelineError
from entra_pipeline.net import OriginSession, SaneRetry, one_line, origin_of, show_origin, trust_context

API_VERSION = "v1.0"
# The user agent names the tool so tenant admins can recognise it in sign-in and audit logs.
USER_AGENT = "entra-pipeline/0.1"

Progress = Callable[[str, int, int | None], None]

#: Graph's limit on the requests in one JSON batch.
BATCH_LIMIT = 20
#: Sub-responses that are retried (re-batched) by ``batch_get``.
RETRY_SUB_STATUS = frozenset({429, 500, 502, 503, 504})
#: Statuses that say "try again later".
TRANSIENT_STATUS = RETRY_SUB_STATUS


class GraphError(PipelineError):
    """A Graph request failed for good; the message is one line with path and request-id."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 request_id: str | None = None, transient: bool | None = None) -> None:
        # Worth trying again later (throttled, unavailable, connection lost), after the client's
        # own retries gave up.
        super().__init__(message, transient=status in TRANSIENT_STATUS if transient is None else transient)
        self.status = status
        self.code = code
        self.request_id = request_id


class DeltaExpired(GraphError):
    """Graph no longer knows the stored delta state (400 syncStateNotFound, 410 resyncRequired):
    a full round has to start again."""


#: A token rejected within this many seconds of being renewed is not renewed again.
FRESH_TOKEN_SECONDS = 5.0

# A body cut short after the headers arrived (a connection dropped mid-answer).
_BODY_ERRORS = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)

#: Graph's codes for a delta token it can no longer use.
DELTA_RESYNC_CODES = frozenset({"syncStateNotFound", "resyncRequired"})

#: Pages one read (a collection, a delta round, one group's members) may take, whatever the
#: server says: 10 million objects at 100 a page (Graph's smallest default page), so a server
#: minting ever-new nextLinks cannot keep a sync running forever.
MAX_PAGES_PER_READ = 100_000
#: A read whose first page reported ``@odata.count`` may take twice the pages that count needs
#: (at the smaller of page_size and 100 a page: Graph may send less than ``$top``) plus this many;
#: eventual consistency moves the count a little, never by half the collection.
COUNT_MARGIN_PAGES = 10


class _PageGuard:
    """Ends a paged read that loops (a nextLink seen before in the same read) or runs far beyond
    its expected size, with one GraphError line. Links are remembered as digests: a hostile
    server's long links cost 32 bytes each."""

    def __init__(self, what: str, first_url: str, page_size: int) -> None:
        self.what = what
        self.page_size = max(1, min(page_size, 100))
        self.limit = MAX_PAGES_PER_READ
        self.reported: int | None = None
        self._seen = {self._key(first_url): 1}

    @staticmethod
    def _key(url: str) -> bytes:
        return hashlib.sha256(url.encode("utf-8", "surrogatepass")).digest()

    def expect(self, count: object) -> None:
        """The first page's ``@odata.count``, if it is a count."""
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            self.reported = count
            self.limit = min(MAX_PAGES_PER_READ, 2 * math.ceil(count / self.page_size) + COUNT_MARGIN_PAGES)

    def follow(self, link: str, page: int) -> None:
        """``link`` leads to page number ``page``; raises GraphError instead of reading it when the
        read loops or has gone on too long."""
        key = self._key(link)
        if key in self._seen:
            raise GraphError(f"nextLink loop: page {page} repeats page {self._seen[key]} of {self.what}; "
                             "the read was ended", transient=False)
        if page > self.limit:
            if self.reported is not None and self.limit < MAX_PAGES_PER_READ:
                raise GraphError(f"{self.what}: page {page} is far beyond the {self.reported:,} objects Graph reported "
                                 f"(@odata.count; at most {self.limit:,} pages expected); the read was ended",
                                 transient=False)
            raise GraphError(f"{self.what}: more than {MAX_PAGES_PER_READ:,} pages; the read was ended",
                             transient=False)
        self._seen[key] = page


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


@dataclass
class Collection:
    items: list[dict]
    reported_count: int | None
    pages: int


@dataclass
class DeltaRound:
    """One round of a delta query: every page from the start (or the stored deltaLink) up to the
    page carrying the next ``@odata.deltaLink``.

    ``items`` are Graph's objects in page order (changed properties only, ``@removed`` entries,
    ``members@delta`` / ``manager@delta``); an object may appear more than once. ``complete`` is
    False when a page carried neither nextLink nor deltaLink: the round was cut short and must not
    be applied as if it were whole."""

    items: list[dict]
    delta_link: str | None
    pages: int
    full: bool
    complete: bool


class GraphClient:
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
            pool_maxsize=max(settings.parallel_requests, 2), user_agent=USER_AGENT, describe=_describe)
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
                    raise GraphError(f"{method} {_describe(url)}: the connection dropped in the middle of the "
                                     f"answer {cut_short} times: {type(exc).__name__}: {_short(str(exc))}",
                                     transient=True) from None
                self._pause(cut_short)
                continue
            except requests.RequestException as exc:
                raise GraphError(f"{method} {_describe(url)} failed after retries: {type(exc).__name__}: "
                                 f"{_short(str(exc))}", transient=True) from None
            self._count(response)
            if response.status_code == 401 and _error_code(response) == "InvalidAuthenticationToken":
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
        what = f"{method} {_describe(url)}"
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
            body = response.json()
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
            raise _error_from(response, _describe(url))
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
        guard = _PageGuard(f"GET {_describe(url)}", requests.Request("GET", url, params=query).prepare().url,
                           self.settings.page_size)
        while url:
            body = self.get_json(url, query, headers)
            pages += 1
            value = body.get("value")
            if not isinstance(value, list):
                raise GraphError(f"GET {_describe(url)}: response has no 'value' list (page {pages})")
            if pages == 1 and isinstance(body.get("@odata.count"), int):
                reported = body["@odata.count"]
                guard.expect(reported)
            for item in value:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                    raise GraphError(f"GET {_describe(url)}: page {pages} has an item without a string "
                                     f"'id': {_short(json.dumps(item, default=str), 120)}")
            items.extend(value)
            if progress is not None:
                progress(label or path, len(items), reported)
            next_link = body.get("@odata.nextLink")
            if next_link is not None and (not isinstance(next_link, str) or origin_of(next_link) != self._origin):
                # The bearer token must never be sent to another host.
                raise GraphError(f"GET {_describe(url)}: nextLink points outside {show_origin(self.base)}")
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

    def delta_round(self, resource: str, select: Iterable[str], delta_link: str | None = None,
                    progress: Progress | None = None) -> DeltaRound:
        """Read one delta round of ``users`` or ``groups``: from scratch (``delta_link`` None: every
        object, Graph's full round) or the changes since ``delta_link``.

        ``$select`` is sent on the first request of a full round only: Graph carries it in the
        tokens. Raises DeltaExpired when Graph no longer accepts the token."""
        if delta_link is None:
            url, query = f"{self.base}/{resource}/delta", {"$select": ",".join(select)}
        else:
            self._relative(delta_link, f"{resource} delta")  # never send the token to another host
            url, query = delta_link, None
        label = f"{resource} ({'full round' if delta_link is None else 'changes'})"
        items: list[dict] = []
        pages = 0
        guard = _PageGuard(f"GET {_describe(url)}", requests.Request("GET", url, params=query).prepare().url,
                           self.settings.page_size)
        while True:
            try:
                body = self.get_json(url, query)
            except GraphError as exc:
                if exc.code in DELTA_RESYNC_CODES or exc.status == 410:
                    raise DeltaExpired(str(exc), status=exc.status, code=exc.code,
                                       request_id=exc.request_id) from None
                raise
            pages += 1
            what = f"GET {_describe(url)}"
            value = body.get("value")
            if not isinstance(value, list):
                raise GraphError(f"{what}: response has no 'value' list (delta page {pages})")
            for item in value:
                _check_delta_item(item, what, pages)
            items.extend(value)
            if progress is not None:
                progress(label, len(items), None)
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
            return DeltaRound(items, delta, pages, delta_link is None, delta is not None)

    # -- JSON batching ---------------------------------------------------------------------
    def batch_get(self, relative_urls: list[str], headers: dict[str, str] | None = None) -> list[dict]:
        """GET each URL through ``POST /v1.0/$batch`` and return one sub-response per URL, in the
        order of ``relative_urls``.

        URLs are relative to ``/v1.0`` (``/groups/{id}/members?$top=999``); ``headers`` (e.g.
        ``ConsistencyLevel``) go into every sub-request, the token into the batch request. URLs
        are sent at most :data:`BATCH_LIMIT` to a batch, up to ``parallel_requests`` batches at
        once. Each answer is Graph's ``{"id", "status", "headers", "body"}`` (``headers`` always a
        dict). Sub-responses with 429, 500, 502, 503 or 504 are sent again, only they, re-batched, after
        the largest ``Retry-After`` among them (capped at ``max_retry_after_seconds``; without
        one, exponential backoff), for at most ``max_retries`` rounds; after that their last
        answer is returned. Other error statuses are returned as they came, not raised. A
        ``$batch`` request that fails (after urllib3's retries) or a malformed batch answer
        raises GraphError.
        """
        return self._batch_get(list(relative_urls), headers)

    def _batch_get(self, urls: list[str], headers: dict[str, str] | None,
                   on_final: Callable[[list[int], list[dict | None]], None] | None = None) -> list[dict]:
        """``batch_get``; ``on_final(indices, results)`` is called in the calling thread each time
        a batch leaves final answers (``results[i]`` for ``i`` in ``indices``)."""
        results: list[dict | None] = [None] * len(urls)
        pending = list(range(len(urls)))
        settings = self.settings
        for round_ in range(settings.max_retries + 1):
            last_round = round_ == settings.max_retries
            chunks = [pending[i:i + BATCH_LIMIT] for i in range(0, len(pending), BATCH_LIMIT)]
            retry: list[int] = []
            wait: float | None = None
            throttled = 0
            batches = self._map_batches(chunks, urls, headers)
            try:
                for chunk, answers in batches:
                    final = []
                    for index, answer in zip(chunk, answers):
                        if answer["status"] in RETRY_SUB_STATUS and not last_round:
                            retry.append(index)
                            throttled += answer["status"] == 429
                            after = _retry_after(answer["headers"])
                            if after is not None:
                                wait = after if wait is None else max(wait, after)
                        else:
                            results[index] = answer
                            final.append(index)
                    if on_final is not None and final:
                        on_final(final, results)
            finally:
                batches.close()  # on an error: batches not yet sent are cancelled now
            if not retry:
                break
            with self._stats_lock:
                self.stats.retries += len(retry)
                self.stats.throttled += throttled
            if wait is None:
                wait = min(30.0, settings.backoff_factor * 2 ** round_) + random.uniform(0, settings.backoff_factor)
            time.sleep(min(wait, settings.max_retry_after_seconds))
            pending = sorted(retry)
        return results  # type: ignore[return-value]  # every index was answered in some round

    def _map_batches(self, chunks: list[list[int]], urls: list[str], headers: dict[str, str] | None):
        """(chunk, answers) for each chunk, in order, ``parallel_requests`` batches in flight."""
        workers = min(self.settings.parallel_requests, len(chunks))
        if workers <= 1:
            for chunk in chunks:
                yield chunk, self._post_batch([urls[i] for i in chunk], headers)
            return
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(self._post_batch, [urls[i] for i in chunk], headers) for chunk in chunks]
            for chunk, future in zip(chunks, futures):
                yield chunk, future.result()
        finally:
            # On an error (or an abandoned generator) batches not yet started are not sent.
            pool.shutdown(wait=True, cancel_futures=True)

    def _post_batch(self, urls: list[str], headers: dict[str, str] | None) -> list[dict]:
        """One ``$batch`` request; the sub-responses in the order of ``urls``."""
        what = f"POST {_describe(self.base)}/$batch"
        requests_ = []
        for n, url in enumerate(urls, 1):
            request = {"id": str(n), "method": "GET", "url": url}
            if headers:
                request["headers"] = dict(headers)
            requests_.append(request)
        response, body = self._request_json("POST", f"{self.base}/$batch", json_body={"requests": requests_})
        if body is None:
            raise _error_from(response, f"{_describe(self.base)}/$batch", "POST")
        with self._stats_lock:
            self.stats.batched_requests += len(urls)
        rid = response.headers.get("request-id", "none")
        answers = body.get("responses")
        if not isinstance(answers, list):
            raise GraphError(f"{what}: answer has no 'responses' list (request-id {rid})")
        by_id: dict[str, dict] = {}
        for answer in answers:  # Graph may answer in any order
            sub_id = answer.get("id") if isinstance(answer, dict) else None
            if (not isinstance(sub_id, str) or not sub_id.isdigit() or not 1 <= int(sub_id) <= len(urls)
                    or sub_id in by_id or not isinstance(answer.get("status"), int)):
                raise GraphError(f"{what}: unexpected sub-response "
                                 f"{_short(json.dumps(answer, default=str), 120)} (request-id {rid})")
            sub_headers = answer.get("headers")
            by_id[sub_id] = {**answer, "headers": sub_headers if isinstance(sub_headers, dict) else {}}
        if len(by_id) != len(urls):
            missing = [url for n, url in enumerate(urls, 1) if str(n) not in by_id]
            raise GraphError(f"{what}: no sub-response for {len(missing)} of {len(urls)} requests, e.g. "
                             f"GET {_describe(missing[0])} (request-id {rid})")
        return [by_id[str(n)] for n in range(1, len(urls) + 1)]

    def _relative(self, next_link: object, what: str) -> str:
        """An absolute nextLink as a URL relative to ``/v1.0``; never another origin."""
        base_path = urlsplit(self.base).path
        if isinstance(next_link, str) and origin_of(next_link) == self._origin:
            parts = urlsplit(next_link)
            if parts.path.startswith(base_path + "/"):
                return parts.path[len(base_path):] + (f"?{parts.query}" if parts.query else "")
        # The bearer token must never be sent to another host.
        raise GraphError(f"{what}: nextLink points outside {self.base}")

    def _sub_error(self, url: str, answer: dict) -> GraphError:
        """GraphError for a failed sub-request: its path, status, Graph code and request-id."""
        status = answer["status"]
        body = answer.get("body")
        error = body.get("error") if isinstance(body, dict) else None
        code = message = None
        request_id = _header(answer["headers"], "request-id")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            inner = error.get("innerError")
            if not request_id and isinstance(inner, dict):
                request_id = inner.get("request-id")
        tries = f" after {self.settings.max_retries} retries" if status in RETRY_SUB_STATUS else ""
        return GraphError(
            f"GET {_describe(self.base)}{_describe(url)} (in $batch): HTTP {status} {_short(str(code or 'error'), 100)}"
            f"{tries}: {_short(str(message or 'no error message'))} "
            f"(request-id {_short(str(request_id or 'none'), 100)})",
            status=status, code=code, request_id=request_id,
        )

    def group_members(self, group_ids: list[str], progress: Progress | None = None) -> dict[str, Collection | None]:
        """Direct members of each group, items carrying ``@odata.type``; None for a group that was
        deleted after it was listed (404). With ``$count`` so that a membership list cut short can
        be noticed.

        Read through ``$batch``: the first pages of up to 20 groups a batch, then the groups'
        nextLinks, up to 20 a batch, round after round until no group has more pages."""
        ids = list(dict.fromkeys(group_ids))
        query = f"$select=id&$top={self.settings.page_size}&$count=true"
        # Graph does not carry ConsistencyLevel to later pages: every sub-request sends it.
        headers = {"ConsistencyLevel": "eventual"}
        items: dict[str, list[dict]] = {gid: [] for gid in ids}
        reported: dict[str, int | None] = {}
        pages: dict[str, int] = dict.fromkeys(ids, 0)
        gone: set[str] = set()
        pending = [(gid, f"/groups/{quote(gid, safe='')}/members?{query}") for gid in ids]
        guards = {gid: _PageGuard(f"GET {_describe(self.base)}{_describe(url)} (in $batch)", url,
                                  self.settings.page_size) for gid, url in pending}
        done = 0

        while pending:
            following: list[tuple[str, str]] = []
            current = pending

            def on_final(indices: list[int], results: list[dict | None]) -> None:
                nonlocal done
                before = done
                for index in indices:
                    gid, url = current[index]
                    answer = results[index]
                    assert answer is not None
                    if answer["status"] == 404:
                        gone.add(gid)  # deleted since it was listed
                        done += 1
                        continue
                    if answer["status"] != 200:
                        raise self._sub_error(url, answer)
                    next_url = self._member_page(gid, url, answer, items, reported, pages)
                    if pages[gid] == 1:
                        guards[gid].expect(reported[gid])
                    if next_url is None:
                        done += 1
                    else:
                        guards[gid].follow(next_url, pages[gid] + 1)
                        following.append((gid, next_url))
                if progress is not None and done != before and (
                        done // 100 != before // 100 or done == len(ids)):
                    progress("group memberships", done, len(ids))

            self._batch_get([url for _, url in current], headers, on_final)
            pending = following

        with self._stats_lock:
            self.stats.pages += sum(pages.values())
        return {gid: None if gid in gone else Collection(items[gid], reported.get(gid), pages[gid])
                for gid in group_ids}

    def _member_page(self, gid: str, url: str, answer: dict, items: dict[str, list[dict]],
                     reported: dict[str, int | None], pages: dict[str, int]) -> str | None:
        """Take one 200 page of a group's members; the next page's relative URL, if any."""
        what = f"GET {_describe(self.base)}{_describe(url)} (in $batch)"
        body = answer.get("body")
        pages[gid] += 1
        page = pages[gid]
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise GraphError(f"{what}: response has no 'value' list (page {page}, request-id "
                             f"{_header(answer['headers'], 'request-id') or 'none'})")
        if page == 1:
            count = body.get("@odata.count")
            reported[gid] = count if isinstance(count, int) and not isinstance(count, bool) else None
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                raise GraphError(f"{what}: page {page} has an item without a string "
                                 f"'id': {_short(json.dumps(item, default=str), 120)}")
            odata_type = item.get("@odata.type")
            if not isinstance(odata_type, str) or not odata_type.startswith("#microsoft.graph."):
                raise GraphError(f"{what}: page {page} has member {_short(repr(item['id']), 80)} without a usable "
                                 f"@odata.type: {_short(repr(odata_type), 80)}")
        items[gid].extend(value)
        next_link = body.get("@odata.nextLink")
        return None if next_link is None else self._relative(next_link, what)


def _check_delta_item(item: object, what: str, page: int) -> None:
    """A delta item needs a string id; its ``*@delta`` lists need ids and types (or @removed)."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        raise GraphError(f"{what}: delta page {page} has an item without a string 'id': "
                         f"{_short(json.dumps(item, default=str), 120)}")
    for key in ("members@delta", "manager@delta"):
        links = item.get(key)
        if links is None:
            continue
        if not isinstance(links, list) or not all(
                isinstance(l, dict) and isinstance(l.get("id"), str) and l["id"]
                and (isinstance(l.get("@odata.type"), str) or isinstance(l.get("@removed"), dict))
                for l in links):
            raise GraphError(f"{what}: delta page {page}: {key} of {_short(repr(item['id']), 80)} is not a list of "
                             f"objects with an id and an @odata.type: {_short(json.dumps(links, default=str), 120)}")


def member_type(item: dict) -> str:
    """``#microsoft.graph.user`` -> ``user``; GraphError for an item without a Graph type."""
    odata_type = item.get("@odata.type")
    if not isinstance(odata_type, str) or not odata_type.startswith("#microsoft.graph."):
        raise GraphError(f"member {_short(repr(item.get('id')), 80)} has no usable @odata.type: {_short(repr(odata_type), 80)}")
    return odata_type.removeprefix("#microsoft.graph.")


def _describe(url: str) -> str:
    """The request's path without query: skip tokens are long and say nothing to a reader."""
    return urlsplit(url).path


def _short(text: str, limit: int = 200) -> str:
    return one_line(text, limit)


def _header(headers: dict, name: str) -> str | None:
    """A sub-response header, whatever its case."""
    name = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return str(value)
    return None


def _retry_after(headers: dict) -> float | None:
    """A sub-response's ``Retry-After`` in seconds (Graph sends whole seconds), if usable."""
    raw = _header(headers, "Retry-After")
    try:
        seconds = float(raw) if raw is not None else None
    except ValueError:
        return None
    # Negative, "nan" or "inf": no usable advice, the exponential backoff applies.
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _error_code(response: requests.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError, RecursionError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _error_from(response: requests.Response, what: str, method: str = "GET") -> GraphError:
    request_id = response.headers.get("request-id")
    code, message = None, None
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            inner = error.get("innerError") or {}
            request_id = request_id or inner.get("request-id")
    except (ValueError, AttributeError, RecursionError):
        message = _short(response.text, 120) or None
    retries = getattr(response.raw, "retries", None)
    tries = f" after {len(retries.history)} retries" if retries is not None and retries.history else ""
    return GraphError(
        f"{method} {what}: HTTP {response.status_code} {_short(str(code or response.reason), 100)}{tries}: "
        f"{_short(str(message or 'no error message'))} (request-id {_short(str(request_id or 'none'), 100)})",
        status=response.status_code, code=code, request_id=request_id,
    )


__all__ = ["AuthError", "BATCH_LIMIT", "Collection", "DeltaExpired", "DeltaRound", "GraphClient", "GraphError", "GraphSettings",
           "GraphStats", "member_type"]
