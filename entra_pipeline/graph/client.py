"""A small Microsoft Graph v1.0 client for reading users, groups and group members.

- Paging follows ``@odata.nextLink`` until it is absent and never computes skip tokens.
- Transient answers (429, 500, 502, 503, 504, connection errors) are retried by urllib3's
  ``Retry``: ``Retry-After`` is honoured when Graph sends it (429, 503 and 504), otherwise capped
  exponential backoff with jitter.
- A rejected access token (401) is renewed once and the request repeated.
- Every failure is one ``GraphError`` naming the request (method, path) and Graph's request-id.
- The session ignores REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE: TLS trust comes from the configured CA
  bundle (or certifi), never silently from the environment.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from entra_pipeline.graph.auth import AuthError, ClientSecretTokens

API_VERSION = "v1.0"
# The user agent names the tool so tenant admins can recognise it in sign-in and audit logs.
USER_AGENT = "entra-pipeline/0.1"

Progress = Callable[[str, int, int | None], None]


class GraphError(RuntimeError):
    """A Graph request failed for good; the message is one line with path and request-id."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id


class _TimeoutSession(requests.Session):
    """A session whose every request has a timeout, including MSAL's token requests: MSAL takes
    no timeout of its own when it is handed an http_client."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, **kwargs)


class _GraphRetry(Retry):
    # Graph may send Retry-After on 503 and 504 as well as on 429.
    RETRY_AFTER_STATUS_CODES = frozenset([429, 503, 504])


@dataclass(frozen=True)
class GraphSettings:
    graph_url: str
    authority_host: str
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    ca_bundle: str | None = None
    page_size: int = 999
    timeout_seconds: float = 60.0
    max_retries: int = 6
    max_retry_after_seconds: float = 120.0
    parallel_requests: int = 4
    backoff_factor: float = 0.5


@dataclass
class GraphStats:
    """What one sync cost: for run metadata and the benchmark."""

    requests: int = 0
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


class GraphClient:
    """Reads one tenant. Thread-safe for the parallel member reads it does itself."""

    def __init__(self, settings: GraphSettings) -> None:
        self.settings = settings
        self.base = f"{settings.graph_url.rstrip('/')}/{API_VERSION}"
        self._origin = _origin(self.base)
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
        self.session = _TimeoutSession(settings.timeout_seconds)
        self.session.trust_env = False
        self.session.verify = settings.ca_bundle or True
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(max_retries=retry, pool_connections=2,
                              pool_maxsize=max(settings.parallel_requests, 2))
        self.session.mount("https://", adapter)
        self._tokens: ClientSecretTokens | None = None
        self._token_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- requests --------------------------------------------------------------------------
    def _token(self, rejected: str | None = None) -> str:
        """A valid access token; ``rejected`` is one Graph refused, renewed unless another thread
        already renewed it."""
        with self._token_lock:
            if self._tokens is None:
                s = self.settings
                self._tokens = ClientSecretTokens(
                    authority_host=s.authority_host, tenant_id=s.tenant_id, client_id=s.client_id,
                    client_secret=s.client_secret, graph_url=s.graph_url, session=self.session,
                )
            token = self._tokens.token()
            if rejected is not None and token == rejected:
                token = self._tokens.token(force_refresh=True)
            self.stats.token_requests = self._tokens.requests
            return token

    def get_json(self, url: str, params: dict | None = None, headers: dict | None = None) -> dict:
        """GET a Graph URL and return its JSON object, or raise GraphError."""
        what = _describe(url)
        token = self._token()
        for attempt in (1, 2):
            if attempt == 2:
                token = self._token(rejected=token)
            request_headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()),
                **(headers or {}),
            }
            try:
                response = self.session.get(url, params=params, headers=request_headers)
            except requests.RequestException as exc:
                raise GraphError(f"GET {what} failed after retries: {type(exc).__name__}: "
                                 f"{_short(str(exc))}") from None
            self._count(response)
            if response.status_code == 401 and attempt == 1 and _error_code(response) == "InvalidAuthenticationToken":
                continue  # renew the token once: it may have expired or been revoked mid-run
            break
        if response.status_code >= 400:
            raise _error_from(response, what)
        try:
            body = response.json()
        except ValueError:
            raise GraphError(
                f"GET {what}: response is not JSON (HTTP {response.status_code}, "
                f"content-type {response.headers.get('content-type')!r}, request-id "
                f"{response.headers.get('request-id', 'none')})",
                status=response.status_code, request_id=response.headers.get("request-id"),
            ) from None
        if not isinstance(body, dict):
            raise GraphError(f"GET {what}: expected a JSON object, got {type(body).__name__} "
                             f"(request-id {response.headers.get('request-id', 'none')})")
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
        while url:
            body = self.get_json(url, query, headers)
            pages += 1
            value = body.get("value")
            if not isinstance(value, list):
                raise GraphError(f"GET {_describe(url)}: response has no 'value' list (page {pages})")
            if pages == 1 and isinstance(body.get("@odata.count"), int):
                reported = body["@odata.count"]
            for item in value:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                    raise GraphError(f"GET {_describe(url)}: page {pages} has an item without a string "
                                     f"'id': {_short(json.dumps(item, default=str), 120)}")
            items.extend(value)
            if progress is not None:
                progress(label or path, len(items), reported)
            next_link = body.get("@odata.nextLink")
            if next_link is not None and (not isinstance(next_link, str) or _origin(next_link) != self._origin):
                # The bearer token must never be sent to another host.
                raise GraphError(f"GET {_describe(url)}: nextLink points outside {self._origin}")
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

    def group_members(self, group_ids: list[str], progress: Progress | None = None) -> dict[str, Collection | None]:
        """Direct members of each group, items carrying ``@odata.type``; None for a group that was
        deleted after it was listed (404). Read in parallel (``parallel_requests``), with
        ``$count`` so that a membership list cut short can be noticed."""
        done = 0
        lock = threading.Lock()

        def fetch(group_id: str) -> tuple[str, Collection | None]:
            nonlocal done
            try:
                members: Collection | None = self.list_collection(
                    f"groups/{quote(group_id, safe='')}/members", {"$select": "id"}, count=True)
            except GraphError as exc:
                if exc.status != 404:
                    raise
                members = None
            with lock:
                done += 1
                if progress is not None and (done % 100 == 0 or done == len(group_ids)):
                    progress("group memberships", done, len(group_ids))
            return group_id, members

        with ThreadPoolExecutor(max_workers=self.settings.parallel_requests) as pool:
            return dict(pool.map(fetch, group_ids))


def member_type(item: dict) -> str:
    """``#microsoft.graph.user`` -> ``user``; GraphError for an item without a Graph type."""
    odata_type = item.get("@odata.type")
    if not isinstance(odata_type, str) or not odata_type.startswith("#microsoft.graph."):
        raise GraphError(f"member {item.get('id')!r} has no usable @odata.type: {odata_type!r}")
    return odata_type.removeprefix("#microsoft.graph.")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _describe(url: str) -> str:
    """The request's path without query: skip tokens are long and say nothing to a reader."""
    return urlsplit(url).path


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_code(response: requests.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _error_from(response: requests.Response, what: str) -> GraphError:
    request_id = response.headers.get("request-id")
    code, message = None, None
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            inner = error.get("innerError") or {}
            request_id = request_id or inner.get("request-id")
    except (ValueError, AttributeError):
        message = _short(response.text, 120) or None
    retries = getattr(response.raw, "retries", None)
    tries = f" after {len(retries.history)} retries" if retries is not None and retries.history else ""
    return GraphError(
        f"GET {what}: HTTP {response.status_code} {code or response.reason}{tries}: "
        f"{_short(message or 'no error message')} (request-id {request_id or 'none'})",
        status=response.status_code, code=code, request_id=request_id,
    )


__all__ = ["AuthError", "Collection", "GraphClient", "GraphError", "GraphSettings", "GraphStats", "member_type"]
